//! Weights in and out under the seed's PyTorch names.
//!
//! A state dict from the seed's code may carry torch.compile's `_orig_mod.` prefix, the
//! rotary `inv_freq` buffers (recomputed here, so ignored), and `W` as
//! `transformer.wte.weight` and/or `lm_head.weight`. Shapes give layers, width and vocab.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::gpt::{attn_scale_for, Block, BlockLayout, Gpt, WTE};
use crate::config::{ModelConfig, NormKind};

pub const LM_HEAD: &str = "lm_head.weight";

/// Reads every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let list = Tensor::read_safetensors(path)
        .map_err(|e| anyhow::anyhow!("{}: not a readable safetensors file: {e}", path.display()))?;
    Ok(list.into_iter().collect())
}

/// Normalises seed names: drops `_orig_mod.` and the `inv_freq` buffers, and resolves `W`
/// from `transformer.wte.weight` / `lm_head.weight` (which must agree when both are present).
pub fn normalise_seed_names(
    raw: BTreeMap<String, Tensor>,
    origin: &str,
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for (name, t) in raw {
        let name = name.strip_prefix("_orig_mod.").unwrap_or(&name).to_string();
        if name.ends_with(".rotary.inv_freq") || name.ends_with(".inv_freq") {
            continue;
        }
        out.insert(name, t);
    }
    match (out.contains_key(WTE), out.contains_key(LM_HEAD)) {
        (true, true) => {
            let head = out.remove(LM_HEAD).expect("present");
            let wte = &out[WTE];
            if wte.size() != head.size()
                || !wte.to_kind(Kind::Float).equal(&head.to_kind(Kind::Float))
            {
                bail!(
                    "{origin}: {WTE} {:?} and {LM_HEAD} {:?} differ; stacklab needs the tied embedding/lm-head of the seed's model",
                    wte.size(),
                    head.size()
                );
            }
        }
        (false, true) => {
            let head = out.remove(LM_HEAD).expect("present");
            out.insert(WTE.to_string(), head);
        }
        (true, false) => {}
        (false, false) => {
            bail!("{origin}: no {WTE} or {LM_HEAD} tensor: not a checkpoint of the seed's GPT")
        }
    }
    Ok(out)
}

/// What the seed-format options can set that the weights cannot tell.
#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    pub n_head: Option<i64>,
    pub norm_wte: Option<NormKind>,
    pub norm_lm_head: Option<NormKind>,
    pub seq_len: Option<i64>,
}

/// Reads the model shape off the tensors: layers from the `h.{i}` indices, width and vocab
/// from `W`; heads = width / 64 unless given; norms default to the seed's training defaults.
pub fn infer_config(
    tensors: &BTreeMap<String, Tensor>,
    opts: &SeedOptions,
    origin: &str,
) -> Result<ModelConfig> {
    let w = tensors
        .get(WTE)
        .with_context(|| format!("{origin}: no {WTE}"))?;
    let size = w.size();
    if size.len() != 2 {
        bail!("{origin}: {WTE} should be a matrix (vocab, width), found shape {size:?}");
    }
    let (vocab, width) = (size[0], size[1]);
    let mut n_layer = 0;
    for name in tensors.keys() {
        if let Some(rest) = name.strip_prefix("transformer.h.") {
            let idx: i64 = rest
                .split('.')
                .next()
                .and_then(|i| i.parse().ok())
                .with_context(|| format!("{origin}: tensor {name} has no layer index"))?;
            n_layer = n_layer.max(idx + 1);
        }
    }
    if n_layer == 0 {
        bail!("{origin}: no transformer.h.{{i}} tensors: a model needs at least one block");
    }
    let n_head = match opts.n_head {
        Some(h) => h,
        None => {
            if width % 64 != 0 {
                bail!("{origin}: width {width} is not a multiple of 64; give the head count with --n-head");
            }
            width / 64
        }
    };
    if n_head <= 0 || width % n_head != 0 {
        bail!("{origin}: width {width} is not divisible by {n_head} heads; give a head count that divides it (--n-head, or model.n_head)");
    }
    let cfg = ModelConfig {
        vocab_size: vocab,
        n_layer,
        n_head,
        n_embd: width,
        seq_len: opts.seq_len.unwrap_or(1024),
        norm_wte: opts.norm_wte.unwrap_or(NormKind::None),
        norm_lm_head: opts.norm_lm_head.unwrap_or(NormKind::RmsNorm),
    };
    // The same checks as a config's model, so a model that cannot run is refused here
    // rather than inside libtorch.
    cfg.validate_shape(origin).map_err(|e| {
        anyhow::anyhow!("{e} (the head count of a seed-format file comes from --n-head or model.n_head, else width / 64)")
    })?;
    Ok(cfg)
}

/// Builds a model from named tensors, checking every name and shape against `cfg`.
pub fn model_from_tensors(
    cfg: &ModelConfig,
    tensors: BTreeMap<String, Tensor>,
    device: Device,
    origin: &str,
) -> Result<Gpt> {
    model_from_tensors_with_layout(cfg, None, tensors, device, origin)
}

/// [`model_from_tensors`] with a recorded per-block layout (a stack's attention scales,
/// head counts and boundary norms) instead of the one `cfg` implies.
pub fn model_from_tensors_with_layout(
    cfg: &ModelConfig,
    layout: Option<&[BlockLayout]>,
    mut tensors: BTreeMap<String, Tensor>,
    device: Device,
    origin: &str,
) -> Result<Gpt> {
    let c = cfg.n_embd;
    if let Some(l) = layout {
        if l.len() as i64 != cfg.n_layer {
            bail!(
                "{origin}: the block layout lists {} blocks but the model has n_layer = {}",
                l.len(),
                cfg.n_layer
            );
        }
        for (i, b) in l.iter().enumerate() {
            if b.n_head <= 0 || c % b.n_head != 0 || (c / b.n_head) % 2 != 0 {
                bail!(
                    "{origin}: block {i} has n_head = {}, which does not split width {c} into even head sizes",
                    b.n_head
                );
            }
            if !(b.attn_scale.is_finite() && b.attn_scale > 0.0) {
                bail!(
                    "{origin}: block {i} has attn_scale = {}, expected a positive number",
                    b.attn_scale
                );
            }
        }
    }
    let mut take = |name: &str, shape: [i64; 2]| -> Result<Tensor> {
        let t = tensors.remove(name).with_context(|| {
            format!("{origin}: missing tensor {name} (expected shape {shape:?})")
        })?;
        if t.size() != shape {
            bail!(
                "{origin}: tensor {name} has shape {:?}, expected {shape:?}",
                t.size()
            );
        }
        Ok(t.to_kind(Kind::Float).to_device(device).detach())
    };
    let wte = take(WTE, [cfg.vocab_size, c])?;
    let plain = BlockLayout {
        attn_scale: attn_scale_for(cfg.n_layer),
        n_head: cfg.n_head,
        pre_norm: NormKind::None,
        source: String::new(),
    };
    let mut blocks = Vec::new();
    for i in 0..cfg.n_layer {
        let l = layout.map(|l| &l[i as usize]).unwrap_or(&plain);
        blocks.push(Block {
            c_attn: take(&format!("transformer.h.{i}.attn.c_attn.weight"), [3 * c, c])?,
            attn_proj: take(&format!("transformer.h.{i}.attn.c_proj.weight"), [c, c])?,
            c_fc: take(&format!("transformer.h.{i}.mlp.c_fc.weight"), [4 * c, c])?,
            mlp_proj: take(&format!("transformer.h.{i}.mlp.c_proj.weight"), [c, 4 * c])?,
            n_head: l.n_head,
            attn_scale: l.attn_scale,
            pre_norm: l.pre_norm,
            source: l.source.clone(),
        });
    }
    if let Some((name, t)) = tensors.iter().next() {
        bail!(
            "{origin}: unexpected tensor {name} with shape {:?} (not part of the seed's GPT with {} layers)",
            t.size(),
            cfg.n_layer
        );
    }
    Ok(Gpt {
        cfg: cfg.clone(),
        wte,
        blocks,
    })
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
    use sha2::{Digest, Sha256};
    let t = wte
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let n = t.numel();
    let mut bytes = vec![0u8; n * 4];
    t.copy_data_u8(&mut bytes, n);
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[i64], v: f64) -> Tensor {
        Tensor::full(shape, v, (Kind::Float, Device::Cpu))
    }

    fn seed_dict(c: i64, vocab: i64) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        for i in 0..2 {
            m.insert(
                format!("_orig_mod.transformer.h.{i}.attn.c_attn.weight"),
                t(&[3 * c, c], 0.1),
            );
            m.insert(
                format!("_orig_mod.transformer.h.{i}.attn.c_proj.weight"),
                t(&[c, c], 0.1),
            );
            m.insert(
                format!("_orig_mod.transformer.h.{i}.mlp.c_fc.weight"),
                t(&[4 * c, c], 0.1),
            );
            m.insert(
                format!("_orig_mod.transformer.h.{i}.mlp.c_proj.weight"),
                t(&[c, 4 * c], 0.1),
            );
            m.insert(
                format!("_orig_mod.transformer.h.{i}.attn.rotary.inv_freq"),
                t(&[32], 1.0),
            );
        }
        m.insert("_orig_mod.lm_head.weight".into(), t(&[vocab, c], 0.2));
        m
    }

    #[test]
    fn seed_names_with_lm_head_only_load_and_shapes_are_read_off() {
        let dict = normalise_seed_names(seed_dict(128, 300), "x").unwrap();
        assert!(dict.contains_key(WTE) && !dict.contains_key(LM_HEAD));
        assert!(!dict
            .keys()
            .any(|k| k.contains("inv_freq") || k.starts_with("_orig_mod.")));
        let cfg = infer_config(&dict, &SeedOptions::default(), "x").unwrap();
        assert_eq!(
            (cfg.vocab_size, cfg.n_layer, cfg.n_embd, cfg.n_head),
            (300, 2, 128, 2)
        );
        assert_eq!(
            (cfg.norm_wte, cfg.norm_lm_head),
            (NormKind::None, NormKind::RmsNorm)
        );
        let m = model_from_tensors(&cfg, dict, Device::Cpu, "x").unwrap();
        assert_eq!(m.blocks.len(), 2);
    }

    #[test]
    fn untied_or_foreign_tensors_are_refused_by_name() {
        let mut d = seed_dict(64, 50);
        d.insert("transformer.wte.weight".into(), t(&[50, 64], 0.3));
        let e = normalise_seed_names(d, "m.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "m.safetensors: transformer.wte.weight [50, 64] and lm_head.weight [50, 64] differ"
            ),
            "{e}"
        );

        let mut d = normalise_seed_names(seed_dict(64, 50), "m").unwrap();
        d.insert("transformer.ln_f.weight".into(), t(&[64], 1.0));
        let cfg = infer_config(&d, &SeedOptions::default(), "m").unwrap();
        let e = model_from_tensors(&cfg, d, Device::Cpu, "m")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("unexpected tensor transformer.ln_f.weight with shape [64]"),
            "{e}"
        );

        let mut d = normalise_seed_names(seed_dict(64, 50), "m").unwrap();
        d.remove("transformer.h.1.mlp.c_fc.weight");
        let cfg = infer_config(&d, &SeedOptions::default(), "m").unwrap();
        let e = model_from_tensors(&cfg, d, Device::Cpu, "m")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("missing tensor transformer.h.1.mlp.c_fc.weight (expected shape [256, 64])"),
            "{e}"
        );

        let e = normalise_seed_names(BTreeMap::new(), "empty")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no transformer.wte.weight or lm_head.weight"),
            "{e}"
        );
    }
}
