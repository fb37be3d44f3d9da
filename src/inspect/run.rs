//! One inspection: the stack and each part alone run on the same probe tokens (val shards,
//! from their start), statistics accumulated in f64, then the seams (RMS, cosine, CKA,
//! stitching fitted on train tokens, chosen on held-out train tokens, scored on the probe;
//! train tokens that overlap the probe are refused).

use std::time::Instant;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::collect::{read_batches, read_sequences, rows_without_pos0, Collected};
use super::latent::latent;
use super::norms::{self, percentiles};
use super::report::*;
use super::seam::{cka_over, stitch_seam, StitchData};
use crate::config::NormKind;
use crate::data::ShardLoader;
use crate::model::{apply_norm, Compute, Gpt};

/// One part of the stack, and the model it comes from run alone.
pub struct PartInput {
    pub label: String,
    pub path: String,
    /// The model alone, with the norms it was trained with.
    pub model: Gpt,
    /// The half-open block range the stack takes.
    pub start: i64,
    pub end: i64,
}

pub struct InspectInput {
    /// The assembled stack (its blocks' `pre_norm` at the seams, the stack's outer norms).
    pub stack: Gpt,
    pub parts: Vec<PartInput>,
    pub norm_inter_model: NormKind,
}

pub struct InspectOptions {
    pub tokens: i64,
    pub batch: usize,
    pub stitch_steps: i64,
    pub stitch_lr: f64,
    pub hist_bins: usize,
    pub device: Device,
}

pub(super) const C: Compute = Compute::Fp32;

/// Runs the inspection. `val` gives the probe (from the start of the val shards); `train`
/// the tokens the stitches are fitted on.
pub fn inspect(
    input: &InspectInput,
    val: &mut ShardLoader,
    train: &mut ShardLoader,
    opts: &InspectOptions,
    progress: &mut dyn crate::progress::Sink,
) -> Result<InspectReport> {
    let start = Instant::now();
    let dev = opts.device;
    let stack = &input.stack;
    let ls = stack.blocks.len();
    if input.parts.len() < 2 {
        bail!("a stack has at least two parts");
    }
    let t = val.seq_len() as i64;
    // The stitches are fitted on `tokens` train tokens and chosen on a quarter as many read
    // after them; none of those may be probe tokens.
    let fit_sequences = (opts.tokens / t).max(0) as usize;
    let heldout_sequences = (fit_sequences / 4).max(1);
    crate::data::overlap::refuse_overlap(
        &train.spans_from_start(fit_sequences + heldout_sequences),
        &val.spans_from_start(fit_sequences),
        "the stitch's train tokens",
        "the val probe",
    )?;
    let probe = read_batches(val, opts.tokens, "the val probe")?;
    let fit = read_batches(train, opts.tokens, "the stitch's train tokens")?;
    let heldout = read_sequences(
        train,
        heldout_sequences,
        "the stitch's held-out train tokens",
    )?;

    // Which stack block came from which part; the seams.
    let mut labels = vec![("embedding".to_string(), None)];
    let mut blocks = Vec::new();
    let mut seams = Vec::new();
    for (i, p) in input.parts.iter().enumerate() {
        if i > 0 {
            seams.push((labels.len() - 1, i));
        }
        for k in p.start..p.end {
            labels.push((p.label.clone(), Some(k)));
            blocks.push(BlockRef {
                model: p.label.clone(),
                block: k,
                attn_scale: p.model.blocks[k as usize].attn_scale,
            });
        }
    }
    if labels.len() != ls + 1 {
        bail!(
            "the parts' ranges give {} blocks but the stack has {ls}",
            labels.len() - 1
        );
    }

    let mut st = Collected::new(ls + 1);
    let mut parts: Vec<Collected> = input
        .parts
        .iter()
        .map(|p| Collected::new(p.model.blocks.len() + 1))
        .collect();
    let mut received: Vec<Vec<Tensor>> = (0..seams.len()).map(|_| Vec::new()).collect();
    let probe_total: i64 = probe.iter().map(|(x, _)| x.numel() as i64).sum();
    let mut probe_done = 0;
    tch::no_grad(|| {
        for (x, y) in &probe {
            let n = x.numel() as i64;
            let (x, y) = (x.to_device(dev), y.to_device(dev));
            let pts = st.add(stack, &x, &y, true);
            for (s, &(after, _)) in seams.iter().enumerate() {
                let r = apply_norm(&pts[after], stack.blocks[after].pre_norm);
                received[s].push(rows_without_pos0(&r));
            }
            for (p, c) in input.parts.iter().zip(parts.iter_mut()) {
                c.add(&p.model, &x, &y, true);
            }
            probe_done += n;
            progress.update("probe", probe_done, probe_total);
        }
    });

    progress.finish();
    let all_rms = st
        .points
        .iter()
        .chain(parts.iter().flat_map(|c| c.points.iter()))
        .flat_map(|c| c.rms.iter());
    let edges = norms::log_edges(all_rms, opts.hist_bins);
    let points = st.report(&labels, &edges);
    let val_loss_stack = points[ls].lens.loss;
    let part_reports: Vec<PartReport> = input
        .parts
        .iter()
        .zip(&parts)
        .map(|(p, c)| {
            let lab: Vec<(String, Option<i64>)> = (0..=p.model.blocks.len())
                .map(|r| {
                    if r == 0 {
                        ("embedding".to_string(), None)
                    } else {
                        (p.label.clone(), Some(r as i64 - 1))
                    }
                })
                .collect();
            let pts = c.report(&lab, &edges);
            PartReport {
                model: p.label.clone(),
                path: p.path.clone(),
                range: [p.start, p.end],
                norm_wte: p.model.cfg.norm_wte.to_string(),
                norm_lm_head: p.model.cfg.norm_lm_head.to_string(),
                val_loss: pts[pts.len() - 1].lens.loss,
                points: pts,
            }
        })
        .collect();

    let mut seam_reports = Vec::new();
    let mut prev_after = 0;
    for (s, &(after, pi)) in seams.iter().enumerate() {
        let upper = &input.parts[pi];
        let expected = &parts[pi].rows[upper.start as usize];
        let got = &received[s];
        let rms_of = |v: &[Tensor]| -> Vec<f64> {
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
        };
        let (rr, re) = (rms_of(got), rms_of(expected));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let cos: Vec<f64> = got
            .iter()
            .zip(expected)
            .flat_map(|(a, b)| {
                Vec::<f64>::try_from(
                    &Tensor::cosine_similarity(a, b, 1, 1e-12)
                        .to_kind(Kind::Double)
                        .to_device(Device::Cpu),
                )
                .expect("f64")
            })
            .collect();
        let cos_p = percentiles(&cos);
        let pair = cka_over(got, expected);
        let rows: Vec<usize> = (prev_after..=after).collect();
        let n_upper = upper.model.blocks.len() + 1;
        let matrix: Vec<Vec<f64>> = rows
            .iter()
            .map(|&r| {
                (0..n_upper)
                    .map(|j| cka_over(&st.rows[r], &parts[pi].rows[j]).biased())
                    .collect()
            })
            .collect();
        let to_received: Vec<f64> = (0..n_upper)
            .map(|j| cka_over(got, &parts[pi].rows[j]).biased())
            .collect();
        let best = to_received
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(j, _)| j)
            .unwrap_or(0);

        // Stitching: fit on train tokens, choose on held-out train tokens, score on the probe.
        let data = StitchData {
            fit: &fit,
            heldout: &heldout,
            probe: &probe,
        };
        let upper_loss = part_reports[pi].val_loss;
        let stitch = stitch_seam(
            stack,
            after,
            &upper.model,
            upper.start as usize,
            &data,
            val_loss_stack,
            upper_loss,
            opts,
        )?;
        seam_reports.push(SeamReport {
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
        });
        prev_after = after;
    }

    let mut notes = Vec::new();
    if stack.cfg.norm_lm_head == NormKind::None {
        notes.push(
            "norm_lm_head = none: the logit lens's logits scale with each point's residual RMS"
                .to_string(),
        );
    }
    if input.norm_inter_model == NormKind::None {
        notes.push("norm_inter_model = none: the identity stitch is the stack itself".to_string());
    }
    let latent = tch::no_grad(|| latent(input, &probe[0].0.to_device(dev)));
    Ok(InspectReport {
        schema: SCHEMA.to_string(),
        tokens: probe.iter().map(|(x, _)| x.numel() as i64).sum(),
        seq_len: t,
        blocks,
        norm_wte: stack.cfg.norm_wte.to_string(),
        norm_lm_head: stack.cfg.norm_lm_head.to_string(),
        norm_inter_model: input.norm_inter_model.to_string(),
        val_loss_stack,
        points,
        hist_edges_log10: edges,
        parts: part_reports,
        seams: seam_reports,
        latent,
        notes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The stacked blocks' labels, for callers that print a block list.
pub fn block_list(report: &InspectReport) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<(String, i64, i64)> = None;
    for b in &report.blocks {
        match &mut cur {
            Some((m, _, e)) if *m == b.model && *e == b.block => *e += 1,
            _ => {
                if let Some((m, s, e)) = cur.take() {
                    out.push(format!("{m}:{s}..{e}"));
                }
                cur = Some((b.model.clone(), b.block, b.block + 1));
            }
        }
    }
    if let Some((m, s, e)) = cur {
        out.push(format!("{m}:{s}..{e}"));
    }
    out.join(" | ")
}
