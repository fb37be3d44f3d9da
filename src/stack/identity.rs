//! A model's identity: the hash of everything that decides what it computes, not only of its
//! weights file. A saved stack keeps its block layout (attention scales, heads, boundary
//! norms) in `meta.toml`, so two saved stacks that differ only in `norm_inter_model` have
//! byte-identical weights and are still different models. The loss cache and "is this the
//! same model" (`unique_model`) both use this identity.

use serde::Serialize;

use crate::config::NormKind;
use crate::model::Gpt;

/// What a model computes, besides its weights' bytes.
#[derive(Serialize)]
struct Function<'a> {
    schema: u32,
    weights_sha256: &'a str,
    norm_wte: NormKind,
    norm_lm_head: NormKind,
    /// Per block: its attention scale (the f64's bits, exactly), heads and boundary norm.
    blocks: Vec<(String, i64, NormKind)>,
}

/// The identity of `model` loaded from a weights file with SHA-256 `weights_sha256`: a
/// SHA-256 over the weights' hash, the outer norms and the resolved block list. Where a
/// block came from (its source label) is display only and not part of it.
pub fn model_id(weights_sha256: &str, model: &Gpt) -> String {
    let f = Function {
        schema: 1,
        weights_sha256,
        norm_wte: model.cfg.norm_wte,
        norm_lm_head: model.cfg.norm_lm_head,
        blocks: model
            .blocks
            .iter()
            .map(|b| {
                (
                    format!("{:016x}", b.attn_scale.to_bits()),
                    b.n_head,
                    b.pre_norm,
                )
            })
            .collect(),
    };
    let text = serde_json::to_string(&f).expect("a model's function serialises");
    crate::hash::sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use tch::Device;

    fn tiny() -> Gpt {
        let cfg = ModelConfig {
            vocab_size: 32,
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            seq_len: 8,
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
        };
        Gpt::new(&cfg, 0, Device::Cpu)
    }

    #[test]
    fn the_identity_changes_with_every_part_of_the_function_and_only_with_it() {
        let a = tiny();
        let id = model_id("ab", &a);
        assert_eq!(id, model_id("ab", &a.shallow_clone()));
        assert_ne!(id, model_id("cd", &a));
        let mut b = a.shallow_clone();
        b.blocks[1].pre_norm = NormKind::RmsNorm;
        assert_ne!(id, model_id("ab", &b));
        let mut b = a.shallow_clone();
        b.blocks[0].attn_scale *= 1.0 + f64::EPSILON;
        assert_ne!(id, model_id("ab", &b));
        let mut b = a.shallow_clone();
        b.blocks[0].n_head = 1;
        assert_ne!(id, model_id("ab", &b));
        let mut b = a.shallow_clone();
        b.cfg.norm_lm_head = NormKind::LayerNorm;
        assert_ne!(id, model_id("ab", &b));
        // A block's source label is display only.
        let mut b = a.shallow_clone();
        b.blocks[0].source = "m2:0".into();
        assert_eq!(id, model_id("ab", &b));
    }
}
