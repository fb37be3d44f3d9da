//! The model, one small struct per concept: [`Block`] (attention + MLP, in `block.rs`) and
//! [`Gpt`], with the numerics of a forward pass ([`Compute`]).

use tch::{Device, Kind, Tensor};

pub use super::compute::Compute;
use super::loss::{backward_from, lm_loss_chunked, LmLoss};
use super::norm::apply_norm;
use crate::config::{ModelConfig, NormKind};

mod block;
pub use block::{attn_scale_for, Block, BlockLayout, Ropes};

pub const WTE: &str = "transformer.wte.weight";

/// The seed's GPT.
pub struct Gpt {
    pub cfg: ModelConfig,
    /// The tied embedding / lm-head matrix (vocab, C), fp32.
    pub wte: Tensor,
    pub blocks: Vec<Block>,
}

/// Uniform in ±bound, drawn on the CPU so a seed gives the same weights on every device.
fn uniform(shape: &[i64], bound: f64) -> Tensor {
    Tensor::empty(shape, (Kind::Float, Device::Cpu)).uniform_(-bound, bound)
}

impl Gpt {
    /// A freshly initialised model: `W` as the lm-head's `nn.Linear` (uniform ±1/sqrt(C)),
    /// block matrices `nn.Linear`'s default (uniform ±1/sqrt(fan_in)).
    pub fn new(cfg: &ModelConfig, seed: i64, device: Device) -> Gpt {
        tch::manual_seed(seed);
        let c = cfg.n_embd;
        let bound = |fan_in: i64| 1.0 / (fan_in as f64).sqrt();
        let wte = uniform(&[cfg.vocab_size, c], bound(c));
        let scale = attn_scale_for(cfg.n_layer);
        let blocks = (0..cfg.n_layer)
            .map(|_| Block {
                c_attn: uniform(&[3 * c, c], bound(c)),
                attn_proj: uniform(&[c, c], bound(c)),
                c_fc: uniform(&[4 * c, c], bound(c)),
                mlp_proj: uniform(&[c, 4 * c], bound(4 * c)),
                n_head: cfg.n_head,
                attn_scale: scale,
                pre_norm: NormKind::None,
                source: String::new(),
            })
            .collect();
        let mut m = Gpt {
            cfg: cfg.clone(),
            wte,
            blocks,
        };
        m.to_device(device);
        m
    }

    pub fn device(&self) -> Device {
        self.wte.device()
    }

    /// The same model sharing its weights.
    pub fn shallow_clone(&self) -> Gpt {
        Gpt {
            cfg: self.cfg.clone(),
            wte: self.wte.shallow_clone(),
            blocks: self.blocks.iter().map(Block::shallow_clone).collect(),
        }
    }

    /// Whether every block computes what `cfg` implies (its depth's attention scale, the
    /// config's heads, no boundary norm): a model the seed's GPT class can hold.
    pub fn is_plain(&self) -> bool {
        let plain = attn_scale_for(self.cfg.n_layer);
        self.blocks.iter().all(|b| {
            b.attn_scale == plain && b.n_head == self.cfg.n_head && b.pre_norm == NormKind::None
        })
    }

    /// The per-block layout, or `None` for a plain model whose blocks carry no source
    /// labels (see [`Gpt::is_plain`]).
    pub fn custom_layout(&self) -> Option<Vec<BlockLayout>> {
        let labelled = self.blocks.iter().any(|b| !b.source.is_empty());
        (!self.is_plain() || labelled).then(|| self.blocks.iter().map(Block::layout).collect())
    }

    pub fn to_device(&mut self, device: Device) {
        let mv = |t: &mut Tensor| *t = t.to_device(device).detach();
        mv(&mut self.wte);
        for b in &mut self.blocks {
            mv(&mut b.c_attn);
            mv(&mut b.attn_proj);
            mv(&mut b.c_fc);
            mv(&mut b.mlp_proj);
        }
    }

    /// Turns gradient tracking on for the blocks, and for `W` unless it is frozen.
    pub fn set_trainable(&mut self, train_wte: bool) {
        let _ = self.wte.set_requires_grad(train_wte);
        for b in &self.blocks {
            for p in b.parameters() {
                let _ = p.set_requires_grad(true);
            }
        }
    }

    /// The block matrices under the seed's names: what Muon trains (`W` is left to AdamW,
    /// or frozen).
    pub fn block_named_parameters(&self) -> Vec<(String, &Tensor)> {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.named_parameters(i))
            .collect()
    }

    /// The block matrices in Muon's order.
    pub fn block_matrices(&self) -> Vec<&Tensor> {
        self.blocks.iter().flat_map(|b| b.parameters()).collect()
    }

    /// All weights under the seed's names, `W` first.
    pub fn named_parameters(&self) -> Vec<(String, &Tensor)> {
        let mut out = vec![(WTE.to_string(), &self.wte)];
        for (i, b) in self.blocks.iter().enumerate() {
            out.extend(b.named_parameters(i));
        }
        out
    }

    pub fn num_parameters(&self) -> i64 {
        self.named_parameters()
            .iter()
            .map(|(_, t)| t.numel() as i64)
            .sum()
    }

    /// `W[idx]`: token embeddings before `norm_wte`, fp32.
    pub fn embed(&self, idx: &Tensor) -> Tensor {
        Tensor::embedding(&self.wte, idx, -1, false, false)
    }

    /// From input embeddings (B, T, C) to the final hidden state: `norm_wte`, the blocks,
    /// `norm_lm_head`. With `residuals`, the residual stream after every block is kept.
    pub fn hidden_from_embeddings(
        &self,
        emb: &Tensor,
        c: Compute,
        mut residuals: Option<&mut Vec<Tensor>>,
    ) -> Tensor {
        let mut ropes = Ropes::new(emb.size()[1], emb.device());
        let mut x = apply_norm(emb, self.cfg.norm_wte);
        for b in &self.blocks {
            x = b.forward(&x, ropes.for_block(b), c);
            if let Some(r) = residuals.as_deref_mut() {
                r.push(x.shallow_clone());
            }
        }
        apply_norm(&x, self.cfg.norm_lm_head)
    }

    /// The residual stream at every point `r = 0..=n_layer` for token ids (B, T): `r = 0` is
    /// the embedding after `norm_wte`, `r = k` the residual after block `k` (before the next
    /// block's `pre_norm`).
    pub fn points(&self, idx: &Tensor, c: Compute) -> Vec<Tensor> {
        let emb = self.embed(idx);
        let mut out = vec![apply_norm(&emb, self.cfg.norm_wte)];
        let _final_hidden = self.hidden_from_embeddings(&emb, c, Some(&mut out));
        out
    }

    /// The final hidden state for token ids (B, T).
    pub fn hidden(&self, idx: &Tensor, c: Compute) -> Tensor {
        self.hidden_from_embeddings(&self.embed(idx), c, None)
    }

    /// The loss of a final hidden state, with gradients for training when `grads` is set
    /// (see [`lm_loss_chunked`]).
    pub fn lm_loss(&self, hidden: &Tensor, targets: &Tensor, c: Compute, grads: bool) -> LmLoss {
        lm_loss_chunked(&self.wte, hidden, targets, c, grads)
    }

    /// Mean cross-entropy of the next-token predictions for `idx` against `targets`, for
    /// evaluation: a detached scalar, no gradients.
    pub fn loss(&self, idx: &Tensor, targets: &Tensor, c: Compute) -> Tensor {
        self.lm_loss(&self.hidden(idx, c), targets, c, false).loss
    }

    /// One training forward and backward: gradients land in the weights' `.grad`; returns
    /// the detached loss.
    pub fn forward_backward(&self, idx: &Tensor, targets: &Tensor, c: Compute) -> Tensor {
        let hidden = self.hidden(idx, c);
        let l = self.lm_loss(&hidden, targets, c, true);
        backward_from(&self.wte, &[(&hidden, &l)]);
        l.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NormKind;
    use crate::model::norm::rms_norm;

    #[test]
    fn the_forward_pass_can_return_every_residual() {
        let cfg = ModelConfig {
            vocab_size: 32,
            n_layer: 3,
            n_head: 2,
            n_embd: 16,
            seq_len: 6,
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
        };
        let m = Gpt::new(&cfg, 0, Device::Cpu);
        let idx = Tensor::randint(32, [2, 6], (Kind::Int64, Device::Cpu));
        let mut residuals = Vec::new();
        let h = m.hidden_from_embeddings(&m.embed(&idx), Compute::Fp32, Some(&mut residuals));
        assert_eq!(residuals.len(), 3);
        for r in &residuals {
            assert_eq!(r.size(), vec![2, 6, 16]);
        }
        // The last residual, normed, is the final hidden state; the blocks change the stream.
        assert!(h.allclose(&rms_norm(&residuals[2]), 1e-6, 1e-6, false));
        assert!(!residuals[0].allclose(&residuals[1], 1e-3, 1e-3, false));
        assert!(h.equal(&m.hidden(&idx, Compute::Fp32)));
    }
}
