//! The logit lens: at every residual point, the final norm (statistics recomputed for that
//! point, not reused from the last layer) and the tied head, scored against the targets and
//! against the final prediction. With `norm_lm_head = none` the lens logits scale with the
//! residual's RMS (the report says so).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::NormKind;
use crate::model::apply_norm;

/// Rows per chunk: bounds the (rows x vocab) fp32 log-probabilities held at once.
pub(super) const CHUNK_ELEMENTS: i64 = 1 << 26;

/// Every point's residuals as the head reads them: fp32, `norm` applied, (B·T, C).
pub(super) fn head_rows(points: &[Tensor], norm: NormKind, c: i64) -> Vec<Tensor> {
    points
        .iter()
        .map(|p| apply_norm(&p.to_kind(Kind::Float), norm).reshape([-1, c]))
        .collect()
}

/// Log-probabilities of rows under the tied head `w` (fp32).
pub(super) fn log_probs(h: &Tensor, w: &Tensor) -> Tensor {
    h.matmul(&w.tr()).log_softmax(-1, Kind::Float)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LensSummary {
    /// Mean cross-entropy against the targets.
    pub loss: f64,
    /// Mean KL(final || point).
    pub kl_to_final: f64,
    /// Fraction of tokens whose top-1 prediction equals the final one.
    pub top1_agree: f64,
    /// Mean probability given to the input token itself.
    pub p_input_token: f64,
}

#[derive(Debug, Default, Clone)]
pub struct LensAccumulator {
    ce: f64,
    kl: f64,
    top1: f64,
    p_input: f64,
    n: f64,
}

impl LensAccumulator {
    pub fn summary(&self) -> LensSummary {
        let n = self.n.max(1.0);
        LensSummary {
            loss: self.ce / n,
            kl_to_final: self.kl / n,
            top1_agree: self.top1 / n,
            p_input_token: self.p_input / n,
        }
    }
}

fn sum(t: &Tensor) -> f64 {
    t.sum(Kind::Double).double_value(&[])
}

/// Adds one batch: `points` are the residuals (B, T, C) at every point (the last one is the
/// final residual, before the norm), `inputs`/`targets` (B, T) the token ids.
pub fn add_batch(
    accs: &mut [LensAccumulator],
    points: &[Tensor],
    wte: &Tensor,
    norm_lm_head: NormKind,
    inputs: &Tensor,
    targets: &Tensor,
) {
    assert_eq!(accs.len(), points.len());
    tch::no_grad(|| {
        let (v, c) = (wte.size()[0], wte.size()[1]);
        let w = wte.to_kind(Kind::Float);
        let rows = head_rows(points, norm_lm_head, c);
        let y = targets.reshape([-1]);
        let x_in = inputs.reshape([-1]);
        let n = y.size()[0];
        let chunk = (CHUNK_ELEMENTS / v).max(1);
        let logp = |h: &Tensor| log_probs(h, &w);
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let yc = y.narrow(0, start, len).unsqueeze(1);
            let xc = x_in.narrow(0, start, len).unsqueeze(1);
            let fin = logp(&rows[rows.len() - 1].narrow(0, start, len));
            let p_fin = fin.exp();
            let top_fin = fin.argmax(-1, false);
            for (acc, h) in accs.iter_mut().zip(&rows) {
                let lp = logp(&h.narrow(0, start, len));
                acc.ce -= sum(&lp.gather(1, &yc, false));
                acc.kl += sum(&(&p_fin * (&fin - &lp)));
                acc.top1 += sum(&lp.argmax(-1, false).eq_tensor(&top_fin));
                acc.p_input += sum(&lp.gather(1, &xc, false).exp());
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

    #[test]
    fn the_last_point_is_the_loss_and_agrees_with_itself() {
        tch::manual_seed(1);
        let w = Tensor::randn([11, 6], (Kind::Float, Device::Cpu));
        let p0 = Tensor::randn([2, 5, 6], (Kind::Float, Device::Cpu));
        let p1 = Tensor::randn([2, 5, 6], (Kind::Float, Device::Cpu)) * 3.0;
        let x = Tensor::randint(11, [2, 5], (Kind::Int64, Device::Cpu));
        let y = Tensor::randint(11, [2, 5], (Kind::Int64, Device::Cpu));
        let mut accs = vec![LensAccumulator::default(); 2];
        add_batch(
            &mut accs,
            &[p0, p1.shallow_clone()],
            &w,
            NormKind::RmsNorm,
            &x,
            &y,
        );
        let last = accs[1].summary();
        let logits = apply_norm(&p1, NormKind::RmsNorm).matmul(&w.tr());
        let ce = logits.reshape([-1, 11]).cross_entropy_loss::<Tensor>(
            &y.reshape([-1]),
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        );
        assert!((last.loss - ce.double_value(&[])).abs() < 1e-5);
        assert!(last.kl_to_final.abs() < 1e-6);
        assert_eq!(last.top1_agree, 1.0);
        assert!(accs[0].summary().kl_to_final > 0.0);
    }
}
