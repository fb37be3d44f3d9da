//! A seam's measures beyond the statistics: CKA over batched rows, the stack run from a
//! seam, the stitched loss, and training the stitch's affine map.

use tch::Tensor;

use super::cka::Cka;
use super::input::{InspectOptions, C};
use super::stitch::{AdamOnMap, Affine};
use crate::model::{apply_norm, Gpt, Ropes};

pub(super) fn cka_over(x: &[Tensor], y: &[Tensor]) -> Cka {
    let mut c = Cka::new(x[0].size()[1], y[0].size()[1], x[0].device());
    for (a, b) in x.iter().zip(y) {
        c.add(a, b);
    }
    c
}

/// The stack from block `from` on, fed `x` in place of that block's boundary norm; returns
/// the final hidden state (after `norm_lm_head`).
fn forward_from(stack: &Gpt, x: &Tensor, from: usize) -> Tensor {
    let mut ropes = Ropes::new(x.size()[1], x.device());
    let mut h = x.shallow_clone();
    for (i, b) in stack.blocks[from..].iter().enumerate() {
        h = if i == 0 {
            b.forward_body(&h, ropes.for_block(b), C)
        } else {
            b.forward(&h, ropes.for_block(b), C)
        };
    }
    apply_norm(&h, stack.cfg.norm_lm_head)
}

pub(super) fn stitched_loss(
    stack: &Gpt,
    raw: &Tensor,
    from: usize,
    map: &Affine,
    y: &Tensor,
) -> f64 {
    let h = forward_from(stack, &map.apply(raw), from);
    stack.lm_loss(&h, y, C, false).loss.double_value(&[])
}

/// Trains the seam's affine map on the language-modelling loss (Adam, everything else
/// frozen), from the least-squares fit, cycling through the train tokens.
pub(super) fn train_map(
    stack: &Gpt,
    after: usize,
    fit: &[(Tensor, Tensor)],
    start: &Affine,
    opts: &InspectOptions,
) -> Affine {
    let dev = opts.device;
    let mut map = Affine {
        a: start.a.detach().copy().set_requires_grad(true),
        b: start.b.detach().copy().set_requires_grad(true),
    };
    let mut adam = AdamOnMap::new(&map, opts.stitch_lr);
    for step in 0..opts.stitch_steps {
        let (x, y) = &fit[step as usize % fit.len()];
        let (x, y) = (x.to_device(dev), y.to_device(dev));
        let raw = tch::no_grad(|| stack.points(&x, C)[after].shallow_clone());
        let h = forward_from(stack, &map.apply(&raw), after);
        let v = stack.cfg.vocab_size;
        let logits = h.matmul(&stack.wte.tr());
        let loss = logits.reshape([-1, v]).cross_entropy_loss::<Tensor>(
            &y.reshape([-1]),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        );
        loss.backward();
        adam.step(&mut map);
    }
    Affine {
        a: map.a.detach(),
        b: map.b.detach(),
    }
}

/// What a seam's stitches are fitted, chosen and scored on: train tokens to fit on, a
/// held-out train slice read after them to choose between least squares and the trained
/// map, and the val probe. Position 0 of each sequence stays out of the least-squares rows.
pub(super) struct StitchData<'a> {
    pub fit: &'a [(Tensor, Tensor)],
    pub heldout: &'a [(Tensor, Tensor)],
    pub probe: &'a [(Tensor, Tensor)],
}

/// Mean stitched loss of `map` at the seam after block `after`, over `batches`.
fn mean_stitched_loss(
    stack: &Gpt,
    after: usize,
    map: &Affine,
    batches: &[(Tensor, Tensor)],
    dev: tch::Device,
) -> f64 {
    tch::no_grad(|| {
        let (mut sum, mut n) = (0.0, 0.0);
        for (x, y) in batches {
            let (x, y) = (x.to_device(dev), y.to_device(dev));
            let raw = &stack.points(&x, C)[after];
            let k = y.numel() as f64;
            sum += stitched_loss(stack, raw, after, map, &y) * k;
            n += k;
        }
        sum / n
    })
}

/// Fits a seam's stitches (least squares, and trained with `--stitch STEPS`) on the fitting
/// tokens, chooses between them on the held-out slice, and scores every map on the probe.
/// `expected` is the upper model alone, `upper_start` the point its first kept block reads.
#[allow(clippy::too_many_arguments)]
pub(super) fn stitch_seam(
    stack: &Gpt,
    after: usize,
    upper: &Gpt,
    upper_start: usize,
    data: &StitchData,
    none: f64,
    upper_model: f64,
    opts: &InspectOptions,
) -> anyhow::Result<super::report::StitchReport> {
    use super::collect::rows_without_pos0;
    use super::report::{StitchLosses, StitchReport};
    use super::stitch::LeastSquares;
    let dev = opts.device;
    let c = stack.cfg.n_embd;
    let mut ls_fit = LeastSquares::new(c, c, dev);
    tch::no_grad(|| {
        for (x, _) in data.fit {
            let x = x.to_device(dev);
            let raw = &stack.points(&x, C)[after];
            let want = &upper.points(&x, C)[upper_start];
            ls_fit.add(&rows_without_pos0(raw), &rows_without_pos0(want));
        }
    });
    let identity = Affine::identity(c, dev);
    let lstsq = ls_fit.solve()?;
    let trained = (opts.stitch_steps > 0).then(|| train_map(stack, after, data.fit, &lstsq, opts));
    let losses = |batches: &[(Tensor, Tensor)]| StitchLosses {
        identity: mean_stitched_loss(stack, after, &identity, batches, dev),
        lstsq: mean_stitched_loss(stack, after, &lstsq, batches, dev),
        trained: trained
            .as_ref()
            .map(|m| mean_stitched_loss(stack, after, m, batches, dev)),
    };
    let (fit, heldout, probe) = (losses(data.fit), losses(data.heldout), losses(data.probe));
    let trained_wins = heldout.trained.is_some_and(|t| t < heldout.lstsq);
    let (chosen, chosen_probe) = match probe.trained {
        Some(t) if trained_wins => ("trained", t),
        _ => ("lstsq", probe.lstsq),
    };
    let tokens = |b: &[(Tensor, Tensor)]| b.iter().map(|(x, _)| x.numel()).sum();
    Ok(StitchReport {
        none,
        identity: probe.identity,
        lstsq: probe.lstsq,
        trained: probe.trained,
        upper_model,
        penalty: chosen_probe - upper_model,
        chosen: chosen.to_string(),
        fit,
        heldout,
        fit_tokens: tokens(data.fit),
        heldout_tokens: tokens(data.heldout),
        trained_steps: opts.stitch_steps.max(0),
    })
}
