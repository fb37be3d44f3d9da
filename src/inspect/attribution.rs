//! Parent attribution: at every point of the stack, which part's prediction the stack's
//! logit lens follows. For each part, KL(part's own final distribution ‖ the stack's lens
//! distribution at the point), and the share of positions where the lens top-1 equals the
//! part's own top-1. The parts run alone on the same tokens (with their own outer norms);
//! the lens uses the stack's head and `norm_lm_head`, as `lens.rs` does.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::NormKind;
use crate::model::apply_norm;

use super::lens::{head_rows, log_probs, CHUNK_ELEMENTS};

/// How close the stack's lens at one point is to one part's own final prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentShare {
    /// The part's model label (`m1`, `m2`, ...).
    pub model: String,
    /// Mean KL(part's final ‖ stack's lens here), in nats.
    pub kl: f64,
    /// Share of positions whose lens top-1 is the part's own top-1.
    pub top1_agree: f64,
}

/// Sums over the probe, one per stack point.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    kl: Vec<f64>,
    top1: Vec<f64>,
    n: f64,
}

impl Attribution {
    pub fn shares(&self, labels: &[String]) -> Vec<ParentShare> {
        let n = self.n.max(1.0);
        labels
            .iter()
            .enumerate()
            .map(|(i, m)| ParentShare {
                model: m.clone(),
                kl: self.kl.get(i).copied().unwrap_or(0.0) / n,
                top1_agree: self.top1.get(i).copied().unwrap_or(0.0) / n,
            })
            .collect()
    }
}

fn sum(t: &Tensor) -> f64 {
    t.sum(Kind::Double).double_value(&[])
}

/// What one part predicts: its final residual (B, T, C), its head and final norm.
pub struct PartFinal<'a> {
    pub residual: &'a Tensor,
    pub wte: &'a Tensor,
    pub norm_lm_head: NormKind,
}

/// Adds one batch: `points` are the stack's residuals (B, T, C) at every point, read with
/// its head `wte` and `norm_lm_head`; `parts` each part's own final prediction.
pub fn add_batch(
    accs: &mut [Attribution],
    points: &[Tensor],
    wte: &Tensor,
    norm_lm_head: NormKind,
    parts: &[PartFinal],
) {
    assert_eq!(accs.len(), points.len());
    tch::no_grad(|| {
        let (v, c) = (wte.size()[0], wte.size()[1]);
        let w = wte.to_kind(Kind::Float);
        let rows = head_rows(points, norm_lm_head, c);
        let finals: Vec<(Tensor, Tensor)> = parts
            .iter()
            .map(|p| {
                let h = apply_norm(&p.residual.to_kind(Kind::Float), p.norm_lm_head);
                (h.reshape([-1, c]), p.wte.to_kind(Kind::Float))
            })
            .collect();
        for acc in accs.iter_mut() {
            acc.kl.resize(parts.len(), 0.0);
            acc.top1.resize(parts.len(), 0.0);
        }
        let n = rows[0].size()[0];
        let chunk = (CHUNK_ELEMENTS / v).max(1);
        let logp = log_probs;
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let own: Vec<(Tensor, Tensor, Tensor)> = finals
                .iter()
                .map(|(h, w)| {
                    let lp = logp(&h.narrow(0, start, len), w);
                    let top = lp.argmax(-1, false);
                    (lp.exp(), lp, top)
                })
                .collect();
            for (acc, h) in accs.iter_mut().zip(&rows) {
                let lens = logp(&h.narrow(0, start, len), &w);
                let top = lens.argmax(-1, false);
                for (i, (p, lp, own_top)) in own.iter().enumerate() {
                    acc.kl[i] += sum(&(p * (lp - &lens)));
                    acc.top1[i] += sum(&top.eq_tensor(own_top));
                }
                acc.n += len as f64;
            }
            start += len;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// KL and agreement computed directly, one position at a time, against the chunked sums.
    #[test]
    fn kl_and_agreement_match_a_direct_computation() {
        tch::manual_seed(3);
        let opts = (Kind::Float, Device::Cpu);
        let w = Tensor::randn([13, 4], opts);
        let pts = [
            Tensor::randn([2, 3, 4], opts),
            Tensor::randn([2, 3, 4], opts) * 2.0,
        ];
        let own = [Tensor::randn([2, 3, 4], opts), pts[1].shallow_clone()];
        let parts: Vec<PartFinal> = own
            .iter()
            .map(|r| PartFinal {
                residual: r,
                wte: &w,
                norm_lm_head: NormKind::RmsNorm,
            })
            .collect();
        let mut accs = vec![Attribution::default(); 2];
        add_batch(&mut accs, &pts, &w, NormKind::RmsNorm, &parts);
        let labels = ["m1".to_string(), "m2".to_string()];
        let probs = |x: &Tensor| {
            let l = apply_norm(x, NormKind::RmsNorm)
                .matmul(&w.tr())
                .reshape([-1, 13]);
            Vec::<Vec<f64>>::try_from(l.log_softmax(-1, Kind::Double)).unwrap()
        };
        for (r, acc) in accs.iter().enumerate() {
            let lens = probs(&pts[r]);
            let got = acc.shares(&labels);
            for (i, o) in own.iter().enumerate() {
                let p = probs(o);
                let (mut kl, mut agree) = (0.0, 0.0);
                for (a, b) in p.iter().zip(&lens) {
                    kl += a.iter().zip(b).map(|(x, y)| x.exp() * (x - y)).sum::<f64>();
                    let arg =
                        |v: &[f64]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
                    agree += (arg(a) == arg(b)) as i64 as f64;
                }
                assert!(
                    (got[i].kl - kl / 6.0).abs() < 1e-5,
                    "{r} {i}: {} vs {}",
                    got[i].kl,
                    kl / 6.0
                );
                assert!((got[i].top1_agree - agree / 6.0).abs() < 1e-12);
            }
        }
        // The stack's last point is part 2's own final residual: KL 0, full agreement.
        let last = accs[1].shares(&labels);
        assert!(last[1].kl.abs() < 1e-6);
        assert_eq!(last[1].top1_agree, 1.0);
    }
}
