//! Residual-stream statistics at one point: per-token RMS (position 0 of every sequence
//! kept apart: its norm behaves unlike the rest), the block's update relative to its input,
//! and the cosine between consecutive residuals. Values are collected in f64 and summarised
//! at the end, so percentiles are exact and histograms share one set of log10 bin edges.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub mean: f64,
    pub p01: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Linear interpolation between order statistics (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub fn percentiles(values: &[f64]) -> Percentiles {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |x| quantile(&v, x);
    Percentiles {
        mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        p01: q(0.01),
        p05: q(0.05),
        p25: q(0.25),
        p50: q(0.50),
        p75: q(0.75),
        p95: q(0.95),
        p99: q(0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CosSummary {
    pub mean: f64,
    pub p05: f64,
    pub p50: f64,
    pub p95: f64,
}

/// What is collected at one residual point.
#[derive(Debug, Default, Clone)]
pub struct PointCollector {
    /// Per-token RMS, positions 1.. of every sequence.
    pub rms: Vec<f64>,
    /// Per-sequence RMS at position 0.
    pub rms_pos0: Vec<f64>,
    /// Per-token cosine to the previous point (positions 1..).
    pub cos_prev: Vec<f64>,
    update_sq: f64,
    input_sq: f64,
}

fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        &t.to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )
    .expect("a f64 tensor converts")
}

impl PointCollector {
    /// Adds a batch at this point: `x` (B, T, C) the residual; `input`, the residual the block
    /// that produced it read (after a boundary norm, if any), absent at point 0.
    pub fn add(&mut self, x: &Tensor, input: Option<&Tensor>) {
        tch::no_grad(|| {
            let x = x.to_kind(Kind::Float);
            let t = x.size()[1];
            let rms = x
                .pow_tensor_scalar(2)
                .mean_dim(-1, false, Kind::Float)
                .sqrt();
            self.rms_pos0.extend(to_vec(&rms.narrow(1, 0, 1)));
            if t > 1 {
                self.rms.extend(to_vec(&rms.narrow(1, 1, t - 1)));
            }
            if let (Some(inp), true) = (input, t > 1) {
                let inp = inp.to_kind(Kind::Float).narrow(1, 1, t - 1);
                let xs = x.narrow(1, 1, t - 1);
                let upd = &xs - &inp;
                self.update_sq += upd.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]);
                self.input_sq += inp.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]);
                let cos = (&xs * &inp).sum_dim_intlist(-1, false, Kind::Float)
                    / (xs.norm_scalaropt_dim(2.0, [-1i64].as_slice(), false)
                        * inp.norm_scalaropt_dim(2.0, [-1i64].as_slice(), false)
                        + 1e-30);
                self.cos_prev.extend(to_vec(&cos));
            }
        })
    }

    /// RMS of the block's update over RMS of its input, pooled over tokens (positions 1..).
    pub fn update_ratio(&self) -> Option<f64> {
        (self.input_sq > 0.0).then(|| (self.update_sq / self.input_sq).sqrt())
    }

    pub fn cos_summary(&self) -> Option<CosSummary> {
        if self.cos_prev.is_empty() {
            return None;
        }
        let p = percentiles(&self.cos_prev);
        Some(CosSummary {
            mean: p.mean,
            p05: p.p05,
            p50: p.p50,
            p95: p.p95,
        })
    }

    pub fn hist(&self, edges_log10: &[f64]) -> Vec<u64> {
        histogram(&self.rms, edges_log10)
    }
}

/// Shared log10 bin edges covering every value given (`bins` bins, a little margin).
pub fn log_edges<'a>(values: impl Iterator<Item = &'a f64>, bins: usize) -> Vec<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values {
        if v > 0.0 && v.is_finite() {
            lo = lo.min(v.log10());
            hi = hi.max(v.log10());
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (-1.0, 1.0);
    }
    let (lo, hi) = ((lo * 10.0).floor() / 10.0, (hi * 10.0).ceil() / 10.0 + 1e-9);
    let hi = if hi - lo < 0.1 { lo + 0.1 } else { hi };
    (0..=bins)
        .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
        .collect()
}

/// Counts of `values` in the log10 bins (the last bin closed); values outside are clamped
/// into the end bins, so the counts always sum to the number of values.
pub fn histogram(values: &[f64], edges_log10: &[f64]) -> Vec<u64> {
    let bins = edges_log10.len() - 1;
    let (lo, hi) = (edges_log10[0], edges_log10[bins]);
    let mut counts = vec![0u64; bins];
    for &v in values {
        let l = if v > 0.0 { v.log10() } else { lo };
        let i = (((l - lo) / (hi - lo)) * bins as f64).floor();
        counts[(i.max(0.0) as usize).min(bins - 1)] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn counts_sum_to_tokens_without_position_0_and_quantiles_interpolate() {
        tch::manual_seed(0);
        let x = Tensor::randn([3, 5, 8], (Kind::Float, Device::Cpu)) * 4.0;
        let prev = Tensor::randn([3, 5, 8], (Kind::Float, Device::Cpu));
        let mut c = PointCollector::default();
        c.add(&x, Some(&prev));
        assert_eq!(c.rms.len(), 3 * 4);
        assert_eq!(c.rms_pos0.len(), 3);
        let edges = log_edges(c.rms.iter().chain(&c.rms_pos0), 20);
        assert_eq!(c.hist(&edges).iter().sum::<u64>(), 12);
        // The update ratio pools ||x - input||² over ||input||² on positions 1..
        let xs = x.narrow(1, 1, 4);
        let ps = prev.narrow(1, 1, 4);
        let want = ((&xs - &ps)
            .pow_tensor_scalar(2)
            .sum(Kind::Double)
            .double_value(&[])
            / ps.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[]))
        .sqrt();
        assert!((c.update_ratio().unwrap() - want).abs() < 1e-9);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        let p = percentiles(&[5.0, 1.0, 3.0]);
        assert_eq!((p.p50, p.max, p.mean), (3.0, 5.0, 3.0));
    }
}
