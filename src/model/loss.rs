//! The language-model loss, `mean CE(hidden @ W.T, targets)` with fp32 logits, computed in
//! row chunks so the full (tokens x vocab) logits never exist at once (13 GB in fp32 for a
//! 64 x 1024 batch of GPT-2), and for training with its gradients computed in the same pass.
//!
//! The gradients are what autograd gives for the unchunked loss in the same numerics: with
//! `Compute::Bf16`, `d logits = (softmax - onehot) / N` is cast to bf16 and multiplied with
//! bf16 `W` and `hidden`, as the backward of the seed's autocast matmul does.

use tch::{Kind, Tensor};

use super::compute::Compute;

/// Logit elements per chunk (1 GiB of fp32 logits).
const CHUNK_ELEMENTS: i64 = 1 << 28;

pub struct LmLoss {
    /// The mean cross-entropy, a detached fp32 scalar.
    pub loss: Tensor,
    /// d loss / d hidden, shaped like `hidden` (fp32), when asked for.
    pub grad_hidden: Option<Tensor>,
    /// d loss / d W (fp32), when asked for.
    pub grad_wte: Option<Tensor>,
}

/// `d logits · n = softmax - onehot(targets)` of one chunk, from its fp32 log-probabilities,
/// in the compute dtype; divided by `n` here when `scale` is given (a token count that is
/// not a power of two), else the caller scales the matmul results.
///
/// Under bf16 with the scale left to the caller, the exponential is written straight into
/// bf16 (computed in fp32 and rounded once, the same bits as `exp`, then a cast), and only
/// the targets' entries (`exp - 1`, in fp32) are rewritten: three full passes fewer over
/// the fp32 chunk than exp, subtract, scale and cast.
fn logit_grads(log_p: Tensor, yc: &Tensor, c: Compute, scale: Option<f64>) -> Tensor {
    if c == Compute::Bf16 && scale.is_none() {
        let mut p = Tensor::empty(log_p.size(), (Kind::BFloat16, log_p.device()));
        let _ = log_p.exp_out(&p);
        let at_targets = (log_p.gather(1, yc, false).exp() - 1.0).to_kind(Kind::BFloat16);
        let _ = p.scatter_(1, yc, &at_targets);
        return p;
    }
    let mut p = log_p;
    let _ = p.exp_();
    let minus_one = Tensor::full([yc.size()[0], 1], -1.0, (Kind::Float, p.device()));
    let _ = p.scatter_add_(1, yc, &minus_one);
    if let Some(s) = scale {
        let _ = p.g_mul_scalar_(s);
    }
    p.to_kind(c.kind())
}

/// Computes the loss (and, with `grads`, its gradients) without recording an autograd graph.
/// `grad_wte` is computed only when `W` requires grad.
///
/// The mean's `1/n` is applied where it costs least and changes no bit: with a power-of-two
/// `n` it is exact in any order, so it scales the chunk's small results (rows of d hidden,
/// the summed d W) instead of the (rows x vocab) chunk; otherwise the fp32 chunk, before
/// its cast, as autograd's backward of the seed's loss does.
pub fn lm_loss_chunked(
    wte: &Tensor,
    hidden: &Tensor,
    targets: &Tensor,
    c: Compute,
    grads: bool,
) -> LmLoss {
    let chunk = (CHUNK_ELEMENTS / wte.size()[0]).max(1);
    lm_loss_in_chunks(wte, hidden, targets, c, grads, chunk)
}

/// [`lm_loss_chunked`] with `chunk` rows per chunk.
fn lm_loss_in_chunks(
    wte: &Tensor,
    hidden: &Tensor,
    targets: &Tensor,
    c: Compute,
    grads: bool,
    chunk: i64,
) -> LmLoss {
    tch::no_grad(|| {
        let width = wte.size()[1];
        let device = hidden.device();
        let h = hidden.detach().reshape([-1, width]);
        let y = targets.reshape([-1]);
        let n = h.size()[0];
        let inv_n = 1.0 / n as f64;
        let exact_scale = (n as u64).is_power_of_two();
        let chunk_scale = (!exact_scale).then_some(inv_n);
        let w = wte.detach().to_kind(c.kind());
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        let grad_hidden = grads.then(|| Tensor::empty([n, width], (Kind::Float, device)));
        let want_w = grads && wte.requires_grad();
        let mut grad_wte: Option<Tensor> = None;
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let hc = h.narrow(0, start, len).to_kind(c.kind());
            let yc = y.narrow(0, start, len).unsqueeze(1);
            let logits = hc.matmul(&w.tr()).to_kind(Kind::Float);
            // One fused row-wise pass, as the seed's cross_entropy (log_softmax, then nll).
            let log_p = logits.log_softmax(1, Kind::Float);
            drop(logits);
            loss_sum -= log_p.gather(1, &yc, false).sum(Kind::Float);
            if let Some(gh) = &grad_hidden {
                let pc = logit_grads(log_p, &yc, c, chunk_scale);
                let mut rows = gh.narrow(0, start, len);
                match c {
                    // Straight into the rows of d hidden, no temporary.
                    Compute::Fp32 => {
                        let _ = pc.matmul_out(&rows, &w);
                    }
                    Compute::Bf16 => {
                        rows.copy_(&pc.matmul(&w));
                    }
                }
                if exact_scale {
                    let _ = rows.g_mul_scalar_(inv_n);
                }
                if want_w {
                    let part = pc.tr().matmul(&hc).to_kind(Kind::Float);
                    grad_wte = Some(match grad_wte.take() {
                        None => part,
                        Some(mut acc) => {
                            acc += part;
                            acc
                        }
                    });
                }
            }
            start += len;
        }
        if let Some(gw) = grad_wte.as_mut() {
            if exact_scale {
                let _ = gw.g_mul_scalar_(inv_n);
            }
            if c == Compute::Bf16 {
                // Autograd under autocast produces d W in one bf16 matmul: round the sum once.
                *gw = gw.to_kind(Kind::BFloat16).to_kind(Kind::Float);
            }
        }
        LmLoss {
            loss: loss_sum / n as f64,
            grad_hidden: grad_hidden.map(|g| g.view(hidden.size().as_slice())),
            grad_wte,
        }
    })
}

/// Backpropagates precomputed gradients: `sum <hidden_i, grad_i>` plus `<W, grad_W>` has
/// exactly those gradients, so one backward call sends them through the blocks and the
/// embedding and adds `grad_W` to `W.grad`.
pub fn backward_from(wte: &Tensor, parts: &[(&Tensor, &LmLoss)]) {
    let mut total: Option<Tensor> = None;
    let mut add = |t: Tensor| {
        total = Some(match total.take() {
            Some(acc) => acc + t,
            None => t,
        })
    };
    for (hidden, l) in parts {
        if let Some(g) = &l.grad_hidden {
            add((*hidden * g).sum(Kind::Float));
        }
        if let Some(gw) = &l.grad_wte {
            add((wte * gw).sum(Kind::Float));
        }
    }
    if let Some(t) = total {
        t.backward();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn chunked_loss_and_gradients_equal_autograd() {
        tch::manual_seed(3);
        let (n, v, c) = (37i64, 50i64, 16i64);
        let w = Tensor::randn([v, c], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let h = Tensor::randn([n, c], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = Tensor::randint(v, [n], (Kind::Int64, Device::Cpu));
        let reference = h.matmul(&w.tr()).cross_entropy_loss::<Tensor>(
            &y,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        );
        let (gh_ref, gw_ref) = {
            let g = Tensor::run_backward(&[&reference], &[&h, &w], false, false);
            (g[0].shallow_clone(), g[1].shallow_clone())
        };
        let l = lm_loss_chunked(&w, &h, &y, Compute::Fp32, true);
        assert!((l.loss.double_value(&[]) - reference.double_value(&[])).abs() < 1e-6);
        assert!(l
            .grad_hidden
            .as_ref()
            .unwrap()
            .allclose(&gh_ref, 1e-5, 1e-7, false));
        assert!(l
            .grad_wte
            .as_ref()
            .unwrap()
            .allclose(&gw_ref, 1e-5, 1e-7, false));
        // The surrogate backward lands the same gradients in .grad.
        backward_from(&w, &[(&h, &l)]);
        assert!(h.grad().allclose(&gh_ref, 1e-5, 1e-7, false));
        assert!(w.grad().allclose(&gw_ref, 1e-5, 1e-7, false));
    }

    #[test]
    fn a_frozen_w_gets_no_gradient_and_loss_alone_needs_no_grads() {
        let w = Tensor::randn([20, 8], (Kind::Float, Device::Cpu));
        let h = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = Tensor::randint(20, [2, 5], (Kind::Int64, Device::Cpu));
        let l = lm_loss_chunked(&w, &h, &y, Compute::Fp32, true);
        assert!(l.grad_wte.is_none());
        assert_eq!(l.grad_hidden.as_ref().unwrap().size(), vec![2, 5, 8]);
        let plain = lm_loss_chunked(&w, &h, &y, Compute::Fp32, false);
        assert!(plain.grad_hidden.is_none());
        assert_eq!(plain.loss.double_value(&[]), l.loss.double_value(&[]));
    }

    /// What the head computed before its passes were cut (exp, subtract at the targets, scale
    /// by 1/n and cast over the whole fp32 chunk, then the matmuls), chunk by chunk.
    fn gradients_the_long_way(
        w: &Tensor,
        h: &Tensor,
        y: &Tensor,
        c: Compute,
        chunk: i64,
    ) -> (Tensor, Tensor) {
        let n = h.size()[0];
        let wk = w.to_kind(c.kind());
        let (mut gh, mut gw) = (Vec::new(), None::<Tensor>);
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let hc = h.narrow(0, start, len).to_kind(c.kind());
            let yc = y.narrow(0, start, len).unsqueeze(1);
            let log_p = hc
                .matmul(&wk.tr())
                .to_kind(Kind::Float)
                .log_softmax(1, Kind::Float);
            let minus_one = Tensor::full([len, 1], -1.0, (Kind::Float, Device::Cpu));
            let p =
                (log_p.exp().scatter_add(1, &yc, &minus_one) * (1.0 / n as f64)).to_kind(c.kind());
            gh.push(p.matmul(&wk).to_kind(Kind::Float));
            let part = p.tr().matmul(&hc).to_kind(Kind::Float);
            gw = Some(gw.map_or(part.shallow_clone(), |acc| acc + part));
        }
        let mut gw = gw.unwrap();
        if c == Compute::Bf16 {
            gw = gw.to_kind(Kind::BFloat16).to_kind(Kind::Float);
        }
        (Tensor::cat(&gh, 0), gw)
    }

    /// With a power-of-two token count the head scales its small results instead of the
    /// chunk, and under bf16 writes the exponential straight into bf16: the same bits as
    /// the long way, in fp32 and bf16, in one chunk and in several.
    #[test]
    fn the_shorter_head_gives_the_long_ways_bits() {
        tch::manual_seed(7);
        let (n, v, c) = (64i64, 96i64, 16i64);
        let w = Tensor::randn([v, c], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let h = Tensor::randn([n, c], (Kind::Float, Device::Cpu)) * 3.0;
        let y = Tensor::randint(v, [n], (Kind::Int64, Device::Cpu));
        for compute in [Compute::Fp32, Compute::Bf16] {
            for chunk in [n, 24] {
                let l = lm_loss_in_chunks(&w, &h, &y, compute, true, chunk);
                let (gh, gw) = gradients_the_long_way(&w, &h, &y, compute, chunk);
                let what = format!("{compute:?}, chunks of {chunk} rows");
                assert!(l.grad_hidden.unwrap().equal(&gh), "d hidden, {what}");
                assert!(l.grad_wte.unwrap().equal(&gw), "d W, {what}");
            }
        }
        // A token count that is not a power of two keeps the scale on the chunk.
        let (h, y) = (h.narrow(0, 0, 50), y.narrow(0, 0, 50));
        for compute in [Compute::Fp32, Compute::Bf16] {
            let l = lm_loss_in_chunks(&w, &h, &y, compute, true, 24);
            let (gh, gw) = gradients_the_long_way(&w, &h, &y, compute, 24);
            assert!(l.grad_hidden.unwrap().equal(&gh), "{compute:?}, 50 tokens");
            assert!(l.grad_wte.unwrap().equal(&gw), "{compute:?}, 50 tokens");
        }
    }

    /// bf16 compute: the chunked loss's gradients are autograd's for the unchunked bf16
    /// computation (`bf16(h) @ bf16(W).T` to fp32 logits, mean cross-entropy), within bf16
    /// rounding.
    #[test]
    fn chunked_bf16_gradients_equal_autograd_of_the_bf16_computation() {
        tch::manual_seed(5);
        let (n, v, c) = (29i64, 40i64, 16i64);
        let w = Tensor::randn([v, c], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let h = Tensor::randn([n, c], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = Tensor::randint(v, [n], (Kind::Int64, Device::Cpu));
        let logits = h
            .to_kind(Kind::BFloat16)
            .matmul(&w.to_kind(Kind::BFloat16).tr())
            .to_kind(Kind::Float);
        let reference =
            logits.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0);
        let g = Tensor::run_backward(&[&reference], &[&h, &w], false, false);
        let (gh_ref, gw_ref) = (&g[0], &g[1]);
        let l = lm_loss_chunked(&w, &h, &y, Compute::Bf16, true);
        let loss = l.loss.double_value(&[]);
        assert!((loss - reference.double_value(&[])).abs() < 1e-5, "{loss}");
        let gh = l.grad_hidden.as_ref().unwrap();
        let gw = l.grad_wte.as_ref().unwrap();
        assert_eq!((gh.kind(), gw.kind()), (Kind::Float, Kind::Float));
        // bf16 keeps 8 bits of mantissa: a relative error of 2^-8 per rounding, a few
        // roundings deep.
        let scale = |t: &Tensor| t.abs().max().double_value(&[]);
        let close =
            |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) <= 2e-2 * scale(b);
        assert!(close(gh, gh_ref), "d hidden differs beyond bf16 rounding");
        assert!(close(gw, gw_ref), "d W differs beyond bf16 rounding");
        // And they are bf16 results, not fp32 ones: the fp32 gradients differ measurably.
        let fp32 = lm_loss_chunked(&w, &h, &y, Compute::Fp32, true);
        assert!(!fp32.grad_hidden.unwrap().allclose(gh, 1e-6, 1e-7, false));
    }
}
