//! A seam's measures beyond the statistics: CKA over batched rows, the stack run from a
//! seam, the stitched loss, and training the stitch's affine map.

use tch::Tensor;

use super::cka::Cka;
use super::run::{InspectOptions, C};
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
