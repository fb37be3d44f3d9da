//! Safetensors files: reading and writing a model's weights, loading a seed-format file
//! (with the metadata `stacklab export` writes), and the hash that identifies `W`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::{infer_config, model_from_tensors, normalise_seed_names, SeedOptions};
use crate::config::NormKind;
use crate::model::Gpt;

/// Reads every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let list = Tensor::read_safetensors(path)
        .map_err(|e| anyhow::anyhow!("{}: not a readable safetensors file: {e}", path.display()))?;
    Ok(list.into_iter().collect())
}

/// Writes a model's weights under the seed's names (no prefix, `W` once as `transformer.wte.weight`).
pub fn write_model(model: &Gpt, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = model
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&named, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Loads a seed-format `.safetensors` file as a model. What `opts` leaves open comes from
/// the file's metadata when `stacklab export` wrote it, else from the seed's defaults.
pub fn load_seed_file(path: &Path, opts: &SeedOptions, device: Device) -> Result<Gpt> {
    let origin = path.display().to_string();
    let tensors = normalise_seed_names(read_safetensors(path)?, &origin)?;
    let opts = opts_with_metadata(opts, &read_metadata(path)?, &origin)?;
    let cfg = infer_config(&tensors, &opts, &origin)?;
    model_from_tensors(&cfg, tensors, device, &origin)
}

/// Metadata keys `stacklab export` writes (the tensors cannot tell these).
pub const META_N_HEAD: &str = "stacklab.n_head";
pub const META_NORM_WTE: &str = "stacklab.norm_wte";
pub const META_NORM_LM_HEAD: &str = "stacklab.norm_lm_head";
pub const META_SEQ_LEN: &str = "stacklab.seq_len";

/// The `__metadata__` strings of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
    let len = u64::from_le_bytes(len);
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > file_len.saturating_sub(8) || len > (100 << 20) {
        bail!(
            "{}: not a readable safetensors file (header of {len} bytes)",
            path.display()
        );
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: the safetensors header is not JSON", path.display()))?;
    Ok(header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

fn opts_with_metadata(
    opts: &SeedOptions,
    meta: &BTreeMap<String, String>,
    origin: &str,
) -> Result<SeedOptions> {
    let int = |key: &str| -> Result<Option<i64>> {
        meta.get(key)
            .map(|v| {
                v.parse::<i64>()
                    .with_context(|| format!("{origin}: metadata {key} = `{v}` is not an integer"))
            })
            .transpose()
    };
    let norm = |key: &str| -> Result<Option<NormKind>> {
        meta.get(key)
            .map(|v| {
                v.parse::<NormKind>()
                    .with_context(|| format!("{origin}: metadata {key}"))
            })
            .transpose()
    };
    Ok(SeedOptions {
        n_head: opts.n_head.or(int(META_N_HEAD)?),
        norm_wte: opts.norm_wte.or(norm(META_NORM_WTE)?),
        norm_lm_head: opts.norm_lm_head.or(norm(META_NORM_LM_HEAD)?),
        seq_len: opts.seq_len.or(int(META_SEQ_LEN)?),
    })
}

/// SHA-256 of `W`'s fp32 bytes: the identity of a shared embedding/head, for lineage.
pub fn wte_hash(wte: &Tensor) -> String {
    let t = wte
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let n = t.numel();
    let mut bytes = vec![0u8; n * 4];
    t.copy_data_u8(&mut bytes, n);
    crate::hash::sha256_hex(&bytes)
}
