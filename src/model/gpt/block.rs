//! One transformer [`Block`] (attention + MLP), the layout a stack records for it, and the
//! rotary tables of each head size in use ([`Ropes`]).

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::Compute;
use crate::config::NormKind;
use crate::model::norm::{apply_norm, rms_norm};
use crate::model::rotary::RotaryTables;

/// `x @ w.T` with both operands in the compute dtype.
fn linear(x: &Tensor, w: &Tensor, c: Compute) -> Tensor {
    let k = c.kind();
    x.to_kind(k).linear(&w.to_kind(k), None::<Tensor>)
}

/// One transformer block. It carries its own attention scale and head count, so blocks of
/// models of different depths can be stacked and still compute what they were trained to.
pub struct Block {
    /// (3C, C): q, k and v projections stacked.
    pub c_attn: Tensor,
    /// (C, C)
    pub attn_proj: Tensor,
    /// (4C, C)
    pub c_fc: Tensor,
    /// (C, 4C)
    pub mlp_proj: Tensor,
    pub n_head: i64,
    /// `1/sqrt(2·n_layer)` of the model the block was trained in.
    pub attn_scale: f64,
    /// A norm applied to the residual stream before the block: a stack boundary's
    /// `norm_inter_model` (`none` inside a model).
    pub pre_norm: NormKind,
    /// Where the block came from (`model:block`) when it was stacked; empty inside a plain
    /// model. Kept through loading and training, so checkpoints of runs trained from a
    /// stack still say which block is which.
    pub source: String,
}

/// What a block needs besides its weights, as checkpoints of stacks (and of runs trained
/// from them) record it per block instead of deriving it from the model's depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockLayout {
    pub attn_scale: f64,
    pub n_head: i64,
    #[serde(default)]
    pub pre_norm: NormKind,
    /// Where the block came from (`model:block`), for display; empty inside a plain model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// The attention scale of a block trained in a model of `n_layer` blocks.
pub fn attn_scale_for(n_layer: i64) -> f64 {
    1.0 / ((2 * n_layer) as f64).sqrt()
}

impl Block {
    /// q, k (rotated) and v, each (B, T, heads, hd), for attention over `x` (B, T, C).
    ///
    /// What attention saves for its backward pass is all that outlives the block: q and k
    /// share the rotation's output (2C per token), and v, while the graph is recorded, is a
    /// copy of its third of the projection (C per token). As a view, v would keep the whole
    /// (B, T, 3C) projection alive until the backward pass (0.19 GiB more a layer in bf16
    /// at 64 x 1024 for GPT-2 small); without a graph (evaluation) nothing is kept, and the
    /// view costs no copy.
    pub fn attention_inputs(
        &self,
        x: &Tensor,
        rope: &RotaryTables,
        c: Compute,
    ) -> (Tensor, Tensor, Tensor) {
        let (b, t, width) = x.size3().expect("attention input is (B, T, C)");
        let hd = width / self.n_head;
        let h = self.n_head;
        let qkv = linear(x, &self.c_attn, c);
        let parts = qkv.split_with_sizes([2 * width, width], 2);
        // q and k rotated in one pass: their heads side by side, (B, T, 2·heads, hd).
        let qk = rope.apply(&parts[0].view([b, t, 2 * h, hd]));
        let v = parts[1].view([b, t, h, hd]);
        let v = if v.requires_grad() { v.contiguous() } else { v };
        (qk.narrow(2, 0, h), qk.narrow(2, h, h), v)
    }

    pub fn attention(&self, x: &Tensor, rope: &RotaryTables, c: Compute) -> Tensor {
        let (b, t, width) = x.size3().expect("attention input is (B, T, C)");
        let (q, k, v) = self.attention_inputs(x, rope, c);
        let y = Tensor::scaled_dot_product_attention(
            &q.transpose(1, 2),
            &k.transpose(1, 2),
            &v.transpose(1, 2),
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        let y = y.transpose(1, 2).contiguous().view([b, t, width]);
        linear(&y, &self.attn_proj, c)
    }

    pub fn mlp(&self, x: &Tensor, c: Compute) -> Tensor {
        linear(&linear(x, &self.c_fc, c).gelu("none"), &self.mlp_proj, c)
    }

    /// `x + s·attn(rms(x))`, then `x + mlp(rms(x))` (after the block's `pre_norm`); x
    /// stays fp32.
    pub fn forward(&self, x: &Tensor, rope: &RotaryTables, c: Compute) -> Tensor {
        self.forward_body(&apply_norm(x, self.pre_norm), rope, c)
    }

    /// The block without its `pre_norm` (a stitch replaces a boundary norm).
    pub fn forward_body(&self, x: &Tensor, rope: &RotaryTables, c: Compute) -> Tensor {
        let x = x + self.attention(&rms_norm(x), rope, c) * self.attn_scale;
        &x + self.mlp(&rms_norm(&x), c)
    }

    /// The same block sharing its weights (a stack's block, a model seen twice).
    pub fn shallow_clone(&self) -> Block {
        Block {
            c_attn: self.c_attn.shallow_clone(),
            attn_proj: self.attn_proj.shallow_clone(),
            c_fc: self.c_fc.shallow_clone(),
            mlp_proj: self.mlp_proj.shallow_clone(),
            n_head: self.n_head,
            attn_scale: self.attn_scale,
            pre_norm: self.pre_norm,
            source: self.source.clone(),
        }
    }

    pub fn head_dim(&self) -> i64 {
        self.attn_proj.size()[0] / self.n_head
    }

    pub fn layout(&self) -> BlockLayout {
        BlockLayout {
            attn_scale: self.attn_scale,
            n_head: self.n_head,
            pre_norm: self.pre_norm,
            source: self.source.clone(),
        }
    }

    pub fn parameters(&self) -> [&Tensor; 4] {
        [&self.c_attn, &self.attn_proj, &self.c_fc, &self.mlp_proj]
    }

    /// The seed's state-dict names of this block's matrices, for block `i`.
    pub fn named_parameters(&self, i: usize) -> [(String, &Tensor); 4] {
        [
            (
                format!("transformer.h.{i}.attn.c_attn.weight"),
                &self.c_attn,
            ),
            (
                format!("transformer.h.{i}.attn.c_proj.weight"),
                &self.attn_proj,
            ),
            (format!("transformer.h.{i}.mlp.c_fc.weight"), &self.c_fc),
            (
                format!("transformer.h.{i}.mlp.c_proj.weight"),
                &self.mlp_proj,
            ),
        ]
    }
}

/// Rotary tables for one sequence length, one per head size in use (blocks stacked from
/// models with other head counts have other head sizes).
pub struct Ropes {
    t: i64,
    device: Device,
    tables: Vec<(i64, RotaryTables)>,
}

impl Ropes {
    pub fn new(t: i64, device: Device) -> Ropes {
        Ropes {
            t,
            device,
            tables: Vec::new(),
        }
    }

    pub fn for_block(&mut self, b: &Block) -> &RotaryTables {
        let hd = b.head_dim();
        let i = match self.tables.iter().position(|(d, _)| *d == hd) {
            Some(i) => i,
            None => {
                self.tables
                    .push((hd, RotaryTables::new(self.t, hd, self.device)));
                self.tables.len() - 1
            }
        };
        &self.tables[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, NormKind};
    use crate::model::Gpt;
    use tch::Kind;

    /// While the graph is recorded, what attention saves (q, k, v) owns no more storage
    /// than it needs: q and k share the rotation's (B, T, 2C), v has its own (B, T, C)
    /// instead of being a view that keeps the whole (B, T, 3C) projection alive.
    #[test]
    fn attention_keeps_only_what_its_backward_needs() {
        let cfg = ModelConfig {
            vocab_size: 32,
            n_layer: 1,
            n_head: 2,
            n_embd: 16,
            seq_len: 5,
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
        };
        let mut m = Gpt::new(&cfg, 0, Device::Cpu);
        m.set_trainable(true);
        let rope = RotaryTables::new(5, 8, Device::Cpu);
        let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
        let owns = |t: &Tensor, numel: i64| {
            t.internal_has_same_storage_numel(&Tensor::empty([numel], (Kind::Float, Device::Cpu)))
        };
        let tokens_width = 2 * 5 * 16;
        for c in [Compute::Fp32, Compute::Bf16] {
            let (q, k, v) = m.blocks[0].attention_inputs(&x, &rope, c);
            assert!(v.requires_grad());
            assert!(owns(&v, tokens_width), "v holds more than itself ({c:?})");
            assert!(
                owns(&q, 2 * tokens_width) && owns(&k, 2 * tokens_width),
                "{c:?}"
            );
            // v is the projection's last third, unchanged.
            let qkv = linear(&x, &m.blocks[0].c_attn, c);
            assert!(v.equal(&qkv.narrow(2, 32, 16).view([2, 5, 2, 8])), "{c:?}");
        }
        // Without a graph nothing outlives the block: v stays a view, no copy is made.
        let (_, _, v) = tch::no_grad(|| m.blocks[0].attention_inputs(&x, &rope, Compute::Fp32));
        assert!(!owns(&v, tokens_width));
    }
}
