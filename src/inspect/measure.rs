//! One seam's measures: what the upper part received against what it expects (RMS, cosine,
//! CKA, the CKA matrix of the points around it), and its stitches.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::collect::Collected;
use super::input::{InspectInput, InspectOptions};
use super::norms::percentiles;
use super::report::SeamReport;
pub(super) use super::seam::StitchData;
use super::seam::{cka_over, stitch_seam};

/// A seam of the stack: the point after which part `part` begins, the first stack point of
/// the lower part (the CKA matrix's rows start there), what the upper part received there
/// on the probe, and the upper part's own loss.
pub(super) struct Seam<'a> {
    pub after: usize,
    pub part: usize,
    pub rows_from: usize,
    pub received: &'a [Tensor],
    pub upper_loss: f64,
}

/// The RMS of every row of the batches.
fn rms_of(v: &[Tensor]) -> Vec<f64> {
    v.iter()
        .flat_map(|t| {
            Vec::<f64>::try_from(
                &t.pow_tensor_scalar(2)
                    .mean_dim(-1, false, Kind::Double)
                    .sqrt()
                    .to_device(Device::Cpu),
            )
            .expect("f64")
        })
        .collect()
}

/// The cosine of every row pair.
fn cosines(got: &[Tensor], expected: &[Tensor]) -> Vec<f64> {
    got.iter()
        .zip(expected)
        .flat_map(|(a, b)| {
            Vec::<f64>::try_from(
                &Tensor::cosine_similarity(a, b, 1, 1e-12)
                    .to_kind(Kind::Double)
                    .to_device(Device::Cpu),
            )
            .expect("f64")
        })
        .collect()
}

pub(super) fn seam_report(
    input: &InspectInput,
    seam: &Seam,
    st: &Collected,
    upper_alone: &Collected,
    data: &StitchData,
    val_loss_stack: f64,
    opts: &InspectOptions,
) -> Result<SeamReport> {
    let (after, pi) = (seam.after, seam.part);
    let upper = &input.parts[pi];
    let expected = &upper_alone.rows[upper.start as usize];
    let got = seam.received;
    let (rr, re) = (rms_of(got), rms_of(expected));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let cos_p = percentiles(&cosines(got, expected));
    let pair = cka_over(got, expected);
    let rows: Vec<usize> = (seam.rows_from..=after).collect();
    let n_upper = upper.model.blocks.len() + 1;
    let matrix: Vec<Vec<f64>> = rows
        .iter()
        .map(|&r| {
            (0..n_upper)
                .map(|j| cka_over(&st.rows[r], &upper_alone.rows[j]).biased())
                .collect()
        })
        .collect();
    let to_received: Vec<f64> = (0..n_upper)
        .map(|j| cka_over(got, &upper_alone.rows[j]).biased())
        .collect();
    let best = to_received
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(j, _)| j)
        .unwrap_or(0);
    // Stitching: fit on train tokens, choose on held-out train tokens, score on the probe.
    let stitch = stitch_seam(
        &input.stack,
        after,
        &upper.model,
        upper.start as usize,
        data,
        val_loss_stack,
        seam.upper_loss,
        opts,
    )?;
    Ok(SeamReport {
        after_block: after,
        lower: input.parts[pi - 1].label.clone(),
        upper: upper.label.clone(),
        upper_start: upper.start,
        rms_received: mean(&rr),
        rms_expected: mean(&re),
        rms_ratio: mean(&rr) / mean(&re),
        cos_to_expected: cos_p.mean,
        cos_to_expected_p05: cos_p.p05,
        cos_to_expected_p50: cos_p.p50,
        cka: pair.biased(),
        cka_debiased: pair.debiased(),
        cka_n_tokens: pair.tokens(),
        cka_matrix: matrix,
        cka_rows: rows,
        best_match_point: best,
        stitch,
    })
}
