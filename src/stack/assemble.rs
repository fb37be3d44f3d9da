//! From models and ranges to a stack: the checks that refuse what cannot be stacked, the
//! warnings about what is probably not meant, and the stack itself, a [`Gpt`] whose blocks
//! share the parts' weights and keep their own attention scale and heads.

use anyhow::{bail, Result};

use super::spec::{BlockRange, StackNorms};
use crate::config::{ModelConfig, NormKind};
use crate::model::{Block, BlockLayout, Gpt};

/// One part of a stack, with its model loaded.
pub struct PartView<'a> {
    /// `m1`, `m2`, ...: one label per distinct model, in order of first appearance.
    pub label: &'a str,
    /// The checkpoint as stacklab names it (a checkpoint name or a file path).
    pub name: &'a str,
    pub model: &'a Gpt,
    pub range: BlockRange,
    /// The norms the model was trained with (`meta.toml`); unknown for seed-named files.
    pub trained_norms: Option<(NormKind, NormKind)>,
}

impl PartView<'_> {
    fn who(&self) -> String {
        format!("{} (`{}`)", self.label, self.name)
    }
}

fn blocks_word(n: i64) -> &'static str {
    if n == 1 {
        "block"
    } else {
        "blocks"
    }
}

/// Refuses parts that cannot form a stack: fewer than two, widths or vocabularies that
/// differ, ranges that are reversed, empty or out of bounds. `from_flags` says the ranges
/// came from the seed's flags (an empty range then needs another explanation).
pub fn check(parts: &[PartView], from_flags: bool) -> Result<()> {
    if parts.len() < 2 {
        bail!("a stack needs at least two parts, got {}", parts.len());
    }
    let first = &parts[0];
    let (v0, c0) = (first.model.cfg.vocab_size, first.model.cfg.n_embd);
    for p in &parts[1..] {
        let (v, c) = (p.model.cfg.vocab_size, p.model.cfg.n_embd);
        if (v, c) != (v0, c0) {
            bail!(
                "cannot stack {} (width {c}, vocabulary {v}) on {} (width {c0}, vocabulary {v0}): the parts of a stack need the same width and vocabulary",
                p.who(),
                first.who()
            );
        }
    }
    for p in parts {
        let depth = p.model.blocks.len() as i64;
        let r = p.range;
        let has = format!("the model has {depth} {} (0..{depth})", blocks_word(depth));
        if r.start > r.end {
            bail!(
                "{}: block range [{}, {}) is reversed: ranges are half-open [start, end) with start < end; {has}",
                p.who(),
                r.start,
                r.end
            );
        }
        if r.start < 0 || r.end > depth {
            bail!(
                "{}: block range [{}, {}) is out of bounds: {has}, so a range needs 0 <= start < end <= {depth} (ranges are half-open [start, end))",
                p.who(),
                r.start,
                r.end
            );
        }
        if r.is_empty() {
            let why = if from_flags {
                "; without use_first_layer a part after the first loses its first block, and without use_last_layer a part before the last loses its last one"
            } else {
                ""
            };
            bail!(
                "{}: block range [{}, {}) is empty: ranges are half-open [start, end) and hold end - start blocks; {has}{why}",
                p.who(),
                r.start,
                r.end
            );
        }
    }
    Ok(())
}

/// What is allowed but probably not meant: parts that do not share `W`, and boundary norms
/// other than those a model was trained with. Each distinct model is named once.
pub fn warnings(parts: &[PartView], norms: &StackNorms) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let first = &parts[0];
    for p in parts {
        if seen.contains(&p.label) {
            continue;
        }
        seen.push(p.label);
        if p.label != first.label && !p.model.wte.equal(&first.model.wte) {
            let rel = tch::no_grad(|| {
                (&p.model.wte - &first.model.wte).norm().double_value(&[])
                    / first.model.wte.norm().double_value(&[])
            });
            out.push(format!(
                "{} and {} do not share the same W: relative difference |W_{} - W_{}| / |W_{}| = {rel:.4e}; this is not a shared-embedding stack (embedding and head come from {})",
                p.who(),
                first.who(),
                p.label,
                first.label,
                first.label,
                first.label
            ));
        }
        if let Some((wte, head)) = p.trained_norms {
            for (key, trained, used) in [
                ("norm_wte", wte, norms.norm_wte),
                ("norm_lm_head", head, norms.norm_lm_head),
            ] {
                if trained != used {
                    out.push(format!(
                        "{} was trained with {key} = {trained}, but the stack uses {key} = {used}",
                        p.who()
                    ));
                }
            }
        }
    }
    out
}

/// Where a stack's block came from.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSource {
    pub label: String,
    pub block: i64,
}

/// A stack: a [`Gpt`] whose blocks are the parts' (shared, not copied), and where each came from.
pub struct Stack {
    pub model: Gpt,
    pub sources: Vec<BlockSource>,
}

/// `m1:0..11 | m2:1..12`.
pub fn block_list(parts: &[PartView]) -> String {
    parts
        .iter()
        .map(|p| format!("{}:{}", p.label, p.range))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Builds the stack of checked parts: `W` from the first part's model, each part's blocks
/// with the attention scale and heads of the model they came from, `norm_inter_model` on the
/// residual stream before every part after the first. `seq_len` is what it is evaluated at.
pub fn assemble(parts: &[PartView], norms: &StackNorms, seq_len: i64) -> Stack {
    let first = parts[0].model;
    let mut blocks = Vec::new();
    let mut sources = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        for j in p.range.start..p.range.end {
            let b = &p.model.blocks[j as usize];
            let seam = i > 0 && j == p.range.start;
            // At a seam the stack's norm replaces the block's own (a saved stack's seam);
            // `none` keeps it.
            let pre_norm = if seam && norms.norm_inter_model != NormKind::None {
                norms.norm_inter_model
            } else {
                b.pre_norm
            };
            blocks.push(Block {
                c_attn: b.c_attn.shallow_clone(),
                attn_proj: b.attn_proj.shallow_clone(),
                c_fc: b.c_fc.shallow_clone(),
                mlp_proj: b.mlp_proj.shallow_clone(),
                n_head: b.n_head,
                attn_scale: b.attn_scale,
                pre_norm,
                source: format!("{}:{j}", p.label),
            });
            sources.push(BlockSource {
                label: p.label.to_string(),
                block: j,
            });
        }
    }
    let cfg = ModelConfig {
        vocab_size: first.cfg.vocab_size,
        n_layer: blocks.len() as i64,
        n_head: first.cfg.n_head,
        n_embd: first.cfg.n_embd,
        seq_len,
        norm_wte: norms.norm_wte,
        norm_lm_head: norms.norm_lm_head,
    };
    Stack {
        model: Gpt {
            cfg,
            wte: first.wte.shallow_clone(),
            blocks,
        },
        sources,
    }
}

impl Stack {
    /// Every block's scale, heads, boundary norm and source, as a saved stack records them.
    pub fn layout(&self) -> Vec<BlockLayout> {
        self.model.blocks.iter().map(Block::layout).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Compute;
    use tch::{Device, Kind, Tensor};

    fn model(n_layer: i64, seed: i64) -> Gpt {
        let cfg = ModelConfig {
            vocab_size: 32,
            n_layer,
            n_head: 2,
            n_embd: 16,
            seq_len: 8,
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
        };
        Gpt::new(&cfg, seed, Device::Cpu)
    }

    fn part<'a>(label: &'a str, m: &'a Gpt, r: (i64, i64)) -> PartView<'a> {
        PartView {
            label,
            name: label,
            model: m,
            range: BlockRange::new(r.0, r.1),
            trained_norms: Some((NormKind::None, NormKind::RmsNorm)),
        }
    }

    #[test]
    fn a_model_stacked_on_itself_applies_its_blocks_twice() {
        let a = model(2, 0);
        let parts = [part("m1", &a, (0, 2)), part("m1", &a, (0, 2))];
        check(&parts, false).unwrap();
        let s = assemble(&parts, &StackNorms::default(), 8);
        assert_eq!(s.model.blocks.len(), 4);
        let idx = Tensor::randint(32, [2, 8], (Kind::Int64, Device::Cpu));
        let rope = crate::model::rotary::RotaryTables::new(8, 8, Device::Cpu);
        let mut x = a.embed(&idx);
        for _ in 0..2 {
            for b in &a.blocks {
                x = b.forward(&x, &rope, Compute::Fp32);
            }
        }
        let want = crate::model::norm::rms_norm(&x);
        let got = s.model.hidden(&idx, Compute::Fp32);
        assert!(got.allclose(&want, 1e-6, 1e-6, false));
        // Every block keeps the 2-layer model's scale, not the 4-block stack's.
        assert!(s.layout().iter().all(|l| l.attn_scale == 0.5));
        assert_eq!(s.layout()[2].source, "m1:0");
        assert_eq!(block_list(&parts), "m1:0..2 | m1:0..2");
    }

    #[test]
    fn ranges_and_shapes_that_cannot_stack_are_refused() {
        let a = model(4, 0);
        let b = model(2, 1);
        let e = check(&[part("m1", &a, (0, 3)), part("m2", &b, (1, 3))], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m2 (`m2`): block range [1, 3) is out of bounds: the model has 2 blocks (0..2), so a range needs 0 <= start < end <= 2"), "{e}");
        let e = check(&[part("m1", &a, (3, 1)), part("m2", &b, (0, 2))], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m1 (`m1`): block range [3, 1) is reversed"),
            "{e}"
        );
        let e = check(&[part("m1", &a, (2, 2)), part("m2", &b, (0, 2))], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("block range [2, 2) is empty: ranges are half-open"),
            "{e}"
        );
        let e = check(&[part("m1", &a, (0, 2))], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a stack needs at least two parts, got 1"), "{e}");
    }
}
