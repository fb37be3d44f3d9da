//! One micro-batch's forward and backward, with COCONUT-parallel steps: a normal pass that
//! also yields the final hidden state (after `norm_lm_head`), then a latent pass in which
//! those hidden states replace token embeddings (still going through `norm_wte`).
//!
//! Modes: `shifted` (the blog's definition) feeds the output at t as the input at t+1 and
//! keeps the targets; `same_position` feeds the output at t as the input at t; `seed` does
//! that too but scores against the next batch's targets, as the seed's code did.

use tch::Tensor;

use crate::config::{CoconutConfig, CoconutMode};
use crate::model::loss::backward_from;
use crate::model::{Compute, Gpt};

/// The latent pass's input embeddings and targets.
pub fn latent_inputs(
    model: &Gpt,
    x: &Tensor,
    y: &Tensor,
    latents: &Tensor,
    next_targets: Option<&Tensor>,
    mode: CoconutMode,
) -> (Tensor, Tensor) {
    match mode {
        CoconutMode::Shifted => {
            let t = x.size()[1];
            // Position 0 has no output before it: it keeps its token embedding.
            let emb = Tensor::cat(
                &[model.embed(&x.narrow(1, 0, 1)), latents.narrow(1, 0, t - 1)],
                1,
            );
            (emb, y.shallow_clone())
        }
        CoconutMode::SamePosition => (latents.shallow_clone(), y.shallow_clone()),
        CoconutMode::Seed => (
            latents.shallow_clone(),
            next_targets
                .expect("seed mode needs the next batch's targets")
                .shallow_clone(),
        ),
    }
}

/// Forward and backward of one micro-batch; on a COCONUT step (`coconut` given) also the
/// latent pass. Gradients accumulate in `.grad`; returns the detached losses.
pub fn forward_backward(
    model: &Gpt,
    x: &Tensor,
    y: &Tensor,
    next_targets: Option<&Tensor>,
    coconut: Option<&CoconutConfig>,
    c: Compute,
) -> (Tensor, Option<Tensor>) {
    forward_backward_then(model, (x, y, next_targets), coconut, c, &|| {})
}

/// [`forward_backward`], calling `before_last_backward` right before the micro-batch's
/// last backward pass (a detached COCONUT step has two): in several processes it arms the
/// gradient buckets, whose all-reduces then start while that pass runs.
pub fn forward_backward_then(
    model: &Gpt,
    (x, y, next_targets): (&Tensor, &Tensor, Option<&Tensor>),
    coconut: Option<&CoconutConfig>,
    c: Compute,
    before_last_backward: &dyn Fn(),
) -> (Tensor, Option<Tensor>) {
    let hidden = model.hidden(x, c);
    let first = model.lm_loss(&hidden, y, c, true);
    let Some(cfg) = coconut else {
        before_last_backward();
        backward_from(&model.wte, &[(&hidden, &first)]);
        return (first.loss, None);
    };
    let latents = if cfg.detach {
        backward_from(&model.wte, &[(&hidden, &first)]);
        hidden.detach()
    } else {
        hidden.shallow_clone()
    };
    let (emb, targets) = latent_inputs(model, x, y, &latents, next_targets, cfg.mode);
    let h2 = model.hidden_from_embeddings(&emb, c, None);
    let second = model.lm_loss(&h2, &targets, c, true);
    before_last_backward();
    if cfg.detach {
        backward_from(&model.wte, &[(&h2, &second)]);
    } else {
        // One backward through both passes: the latent pass's gradient reaches the first.
        backward_from(&model.wte, &[(&hidden, &first), (&h2, &second)]);
    }
    (first.loss, Some(second.loss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use tch::{Device, Kind};

    fn tiny() -> Gpt {
        let cfg = ModelConfig {
            vocab_size: 13,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            seq_len: 5,
            norm_wte: crate::config::NormKind::RmsNorm,
            norm_lm_head: crate::config::NormKind::RmsNorm,
        };
        let mut m = Gpt::new(&cfg, 7, Device::Cpu);
        m.set_trainable(true);
        m
    }

    fn batch(seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let t = Tensor::randint(13, [2, 6], (Kind::Int64, Device::Cpu));
        (
            t.narrow(1, 0, 5).contiguous(),
            t.narrow(1, 1, 5).contiguous(),
        )
    }

    #[test]
    fn latent_inputs_follow_each_mode() {
        let m = tiny();
        let (x, y) = batch(1);
        let (_, y_next) = batch(2);
        let latents = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
        let (emb, tg) = latent_inputs(&m, &x, &y, &latents, None, CoconutMode::Shifted);
        assert!(emb.narrow(1, 0, 1).equal(&m.embed(&x.narrow(1, 0, 1))));
        assert!(
            emb.narrow(1, 1, 4).equal(&latents.narrow(1, 0, 4)),
            "input t+1 = output t"
        );
        assert!(tg.equal(&y));
        let (emb, tg) = latent_inputs(&m, &x, &y, &latents, None, CoconutMode::SamePosition);
        assert!(emb.equal(&latents) && tg.equal(&y));
        let (emb, tg) = latent_inputs(&m, &x, &y, &latents, Some(&y_next), CoconutMode::Seed);
        assert!(emb.equal(&latents) && tg.equal(&y_next));
    }

    /// The definition with plain autograd: L = CE(pass 1) + CE(pass 2), latents detached or not.
    fn reference_grads(
        m: &Gpt,
        x: &Tensor,
        y: &Tensor,
        next: &Tensor,
        mode: CoconutMode,
        detach: bool,
    ) -> Vec<Tensor> {
        let ce = |h: &Tensor, t: &Tensor| {
            h.matmul(&m.wte.tr())
                .reshape([-1, 13])
                .cross_entropy_loss::<Tensor>(
                    &t.reshape([-1]),
                    None,
                    tch::Reduction::Mean,
                    -100,
                    0.0,
                )
        };
        let h1 = m.hidden(x, Compute::Fp32);
        let lat = if detach {
            h1.detach()
        } else {
            h1.shallow_clone()
        };
        let (emb, tg) = latent_inputs(m, x, y, &lat, Some(next), mode);
        let h2 = m.hidden_from_embeddings(&emb, Compute::Fp32, None);
        let loss = ce(&h1, y) + ce(&h2, &tg);
        let params: Vec<&Tensor> = m.named_parameters().into_iter().map(|(_, t)| t).collect();
        Tensor::run_backward(&[&loss], &params, false, false)
    }

    #[test]
    fn gradients_equal_autograd_of_the_definition_in_every_mode() {
        let (x, y) = batch(3);
        let (_, next) = batch(4);
        for mode in [
            CoconutMode::Shifted,
            CoconutMode::SamePosition,
            CoconutMode::Seed,
        ] {
            let mut per_detach = Vec::new();
            for detach in [true, false] {
                let m = tiny();
                let want = reference_grads(&m, &x, &y, &next, mode, detach);
                let cfg = CoconutConfig {
                    every: 1,
                    mode,
                    detach,
                };
                let (l1, l2) = forward_backward(&m, &x, &y, Some(&next), Some(&cfg), Compute::Fp32);
                assert!(
                    l1.double_value(&[]).is_finite() && l2.unwrap().double_value(&[]).is_finite()
                );
                for ((name, p), w) in m.named_parameters().into_iter().zip(&want) {
                    assert!(
                        p.grad().allclose(w, 1e-4, 1e-6, false),
                        "{mode:?} detach={detach}: gradient of {name} differs"
                    );
                }
                per_detach.push(m.blocks[0].c_fc.grad());
            }
            // Not detaching sends the latent pass's gradient through the first pass too.
            assert!(
                !per_detach[0].allclose(&per_detach[1], 1e-6, 1e-8, false),
                "{mode:?}"
            );
        }
    }
}
