//! Weights in and out under the seed's PyTorch names.
//!
//! A state dict from the seed's code may carry torch.compile's `_orig_mod.` prefix, the
//! rotary `inv_freq` buffers (recomputed here, so ignored), and `W` as
//! `transformer.wte.weight` and/or `lm_head.weight`. Shapes give layers, width and vocab.
//! Reading and writing the files themselves is in `file.rs`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::gpt::{attn_scale_for, Block, BlockLayout, Gpt, WTE};
use crate::config::{ModelConfig, NormKind};

mod file;
pub use file::{
    load_seed_file, read_metadata, read_safetensors, write_model, wte_hash, META_NORM_LM_HEAD,
    META_NORM_WTE, META_N_HEAD, META_SEQ_LEN,
};

pub const LM_HEAD: &str = "lm_head.weight";

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

#[cfg(test)]
mod tests;
