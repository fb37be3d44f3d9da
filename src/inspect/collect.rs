//! Reading the probe and fitting tokens, and collecting per-point statistics (norms, the
//! logit lens, the rows CKA needs) of one model over them.

use anyhow::{bail, Result};
use tch::Tensor;

use super::input::C;
use super::lens::{self, LensAccumulator};
use super::norms::{percentiles, PointCollector};
use super::report::PointReport;
use crate::data::ShardLoader;
use crate::model::{apply_norm, Gpt};

/// A batch's rows at one point, position 0 left out: (B·(T-1), C).
pub(super) fn rows_without_pos0(x: &Tensor) -> Tensor {
    let (b, t, c) = x.size3().expect("(B, T, C)");
    x.narrow(1, 1, t - 1).reshape([b * (t - 1), c])
}

pub(super) struct Collected {
    pub(super) points: Vec<PointCollector>,
    pub(super) lens: Vec<LensAccumulator>,
    /// Per point, the probe's rows (position 0 left out), one tensor per batch.
    pub(super) rows: Vec<Vec<Tensor>>,
}

impl Collected {
    pub(super) fn new(n_points: usize) -> Collected {
        Collected {
            points: vec![PointCollector::default(); n_points],
            lens: vec![LensAccumulator::default(); n_points],
            rows: (0..n_points).map(|_| Vec::new()).collect(),
        }
    }

    pub(super) fn add(
        &mut self,
        model: &Gpt,
        x: &Tensor,
        y: &Tensor,
        keep_rows: bool,
    ) -> Vec<Tensor> {
        let pts = model.points(x, C);
        for (r, p) in pts.iter().enumerate() {
            let input = (r > 0).then(|| apply_norm(&pts[r - 1], model.blocks[r - 1].pre_norm));
            self.points[r].add(p, input.as_ref());
            if keep_rows {
                self.rows[r].push(rows_without_pos0(p));
            }
        }
        lens::add_batch(
            &mut self.lens,
            &pts,
            &model.wte,
            model.cfg.norm_lm_head,
            x,
            y,
        );
        pts
    }

    pub(super) fn report(
        &self,
        labels: &[(String, Option<i64>)],
        edges: &[f64],
    ) -> Vec<PointReport> {
        self.points
            .iter()
            .enumerate()
            .map(|(r, c)| PointReport {
                r,
                model: labels[r].0.clone(),
                block: labels[r].1,
                rms: percentiles(&c.rms),
                rms_pos0: c.rms_pos0.iter().sum::<f64>() / c.rms_pos0.len().max(1) as f64,
                hist: c.hist(edges),
                update_ratio: c.update_ratio(),
                cos_prev: c.cos_summary(),
                lens: self.lens[r].summary(),
                attribution: Vec::new(),
            })
            .collect()
    }
}

/// The first `tokens` tokens (whole sequences) of the loader's shards, from their start, in
/// batches of the loader's size and a smaller last one.
pub(super) fn read_batches(
    loader: &mut ShardLoader,
    tokens: i64,
    what: &str,
) -> Result<Vec<(Tensor, Tensor)>> {
    let t = loader.seq_len() as i64;
    let sequences = tokens / t;
    if sequences <= 0 {
        bail!("{what}: {tokens} tokens are less than one sequence of {t}");
    }
    loader.set_wrapping(false);
    loader.reset()?;
    read_sequences(loader, sequences as usize, what)
}

/// The next `sequences` sequences from where the loader stands, read as evaluation reads
/// them ([`ShardLoader::next_sequences`]: independent of the batch size).
pub(super) fn read_sequences(
    loader: &mut ShardLoader,
    sequences: usize,
    what: &str,
) -> Result<Vec<(Tensor, Tensor)>> {
    let t = loader.seq_len() as i64;
    let b = loader.batch_size();
    let mut left = sequences;
    let mut out = Vec::new();
    while left > 0 {
        let n = left.min(b);
        let batch = loader.next_sequences(n).map_err(|e| {
            anyhow::anyhow!("{what}: cannot read {} tokens: {e}", sequences as i64 * t)
        })?;
        let shape = [n as i64, t];
        out.push((
            Tensor::from_slice(&batch.inputs).view(shape),
            Tensor::from_slice(&batch.targets).view(shape),
        ));
        left -= n;
    }
    Ok(out)
}
