//! `stacklab export`: a checkpoint as one `.safetensors` file that loads strictly
//! (`load_state_dict(strict=True)`) into the seed's PyTorch GPT class: every name of its state
//! dict (`W` as both `transformer.wte.weight` and `lm_head.weight`, each block's rotary
//! `inv_freq` buffer), optionally under torch.compile's `_orig_mod.` prefix. The head count,
//! norms and context the tensors cannot tell go into the file's metadata, which stacklab
//! reads back when the file is given as a checkpoint.
//!
//! Checkpoints themselves keep `W` once; the export is the one place it is written twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::model::weights::{
    SeedOptions, LM_HEAD, META_NORM_LM_HEAD, META_NORM_WTE, META_N_HEAD, META_SEQ_LEN,
};
use crate::model::Gpt;
use crate::runs::CheckpointRef;

#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Prepended to every name (`_orig_mod.` for a torch.compile'd model's state dict).
    pub prefix: String,
    /// Replace an existing file at the destination.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub path: PathBuf,
    pub tensors: usize,
    pub bytes: u64,
}

/// The rotary `inv_freq` buffer of the seed's `Rotary(head_dim)`, with the same ops.
fn inv_freq(head_dim: i64) -> Tensor {
    let opts = (Kind::Float, Device::Cpu);
    let exponent = Tensor::arange_start_step(0, head_dim, 2, opts).divide_scalar(head_dim as f64);
    Tensor::pow_scalar(10000.0, &exponent).reciprocal()
}

/// Every tensor of the seed's GPT state dict for `model`, by name (without the prefix).
pub fn seed_state_dict(model: &Gpt, origin: &str) -> Result<BTreeMap<String, Tensor>> {
    if !model.is_plain() {
        bail!(
            "{origin}: its blocks carry their own attention scales, head counts or boundary norms (a stack): the seed's GPT class has one of each for all blocks and cannot hold it"
        );
    }
    let mut out = BTreeMap::new();
    for (name, t) in model.named_parameters() {
        out.insert(name, t.detach().to_device(Device::Cpu).to_kind(Kind::Float));
    }
    out.insert(
        LM_HEAD.to_string(),
        model
            .wte
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float),
    );
    for (i, b) in model.blocks.iter().enumerate() {
        out.insert(
            format!("transformer.h.{i}.attn.rotary.inv_freq"),
            inv_freq(b.head_dim()),
        );
    }
    Ok(out)
}

/// Writes `tensors` (fp32) and `metadata` as a safetensors file at `path`, through a
/// temporary file in the same folder, synced and renamed into place.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<u64> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    let mut offset = 0u64;
    let mut order = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_kind(Kind::Float).contiguous();
        let bytes = t.numel() as u64 * 4;
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": t.size(),
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
        order.push(t);
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))?;
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let f = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        w.write_all(&(h.len() as u64).to_le_bytes())?;
        w.write_all(&h)?;
        for t in &order {
            let n = t.numel();
            let mut buf = vec![0u8; n * 4];
            t.copy_data_u8(&mut buf, n);
            w.write_all(&buf)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(8 + h.len() as u64 + offset)
}

/// Exports `ckpt` to `out` (a `.safetensors` path) under the seed's full names.
pub fn export(
    ckpt: &CheckpointRef,
    seed_opts: &SeedOptions,
    out: &Path,
    opts: &ExportOptions,
) -> Result<ExportSummary> {
    if out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "--out {}: the file name must end in .safetensors",
            out.display()
        );
    }
    if out.is_dir() {
        bail!("--out {}: is a folder, expected a file name", out.display());
    }
    if out.exists() && !opts.force {
        bail!(
            "--out {}: the file exists; pass --force to replace it",
            out.display()
        );
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "--out {}: folder {} does not exist",
                out.display(),
                parent.display()
            );
        }
    }
    let name = ckpt.name();
    let model = ckpt
        .load_model(seed_opts, Device::Cpu)
        .with_context(|| format!("--checkpoint {name}"))?;
    let dict = seed_state_dict(&model, &name)?;
    let tensors: BTreeMap<String, Tensor> = dict
        .into_iter()
        .map(|(n, t)| (format!("{}{n}", opts.prefix), t))
        .collect();
    let c = &model.cfg;
    let metadata: BTreeMap<String, String> = [
        ("format", "pt".to_string()),
        (META_N_HEAD, c.n_head.to_string()),
        (META_NORM_WTE, c.norm_wte.to_string()),
        (META_NORM_LM_HEAD, c.norm_lm_head.to_string()),
        (META_SEQ_LEN, c.seq_len.to_string()),
        ("stacklab.vocab_size", c.vocab_size.to_string()),
        ("stacklab.n_layer", c.n_layer.to_string()),
        ("stacklab.n_embd", c.n_embd.to_string()),
        ("stacklab.prefix", opts.prefix.clone()),
        ("stacklab.source", name),
        ("stacklab.version", env!("CARGO_PKG_VERSION").to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let bytes = write_safetensors_atomic(out, &tensors, &metadata)?;
    Ok(ExportSummary {
        path: out.to_path_buf(),
        tensors: tensors.len(),
        bytes,
    })
}
