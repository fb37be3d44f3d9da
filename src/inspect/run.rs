//! One inspection: the stack and each part alone run on the same probe tokens (val shards,
//! from their start), statistics accumulated in f64, then the seams (RMS, cosine, CKA,
//! stitching fitted on train tokens, chosen on held-out train tokens, scored on the probe;
//! train tokens that overlap the probe are refused).

use std::time::Instant;

use anyhow::{bail, Result};
use tch::Tensor;

use super::attribution::{self, Attribution, PartFinal};
use super::collect::{read_batches, read_sequences, rows_without_pos0, Collected};
use super::input::{InspectInput, InspectOptions};
use super::latent::latent;
use super::measure::{seam_report, Seam, StitchData};
use super::norms;
use super::report::*;
use super::scan;
use crate::config::NormKind;
use crate::data::ShardLoader;
use crate::model::apply_norm;
use crate::progress::Sink;

type Batches = Vec<(Tensor, Tensor)>;

/// The tokens an inspection reads: the probe (val), and the train tokens the stitches are
/// fitted on and chosen on.
struct Tokens {
    probe: Batches,
    fit: Batches,
    heldout: Batches,
}

/// Reads the probe and the stitches' train tokens, refusing train tokens that are probe
/// tokens: the stitches are fitted on `tokens` train tokens and chosen on a quarter as many
/// read after them.
fn read_tokens(val: &mut ShardLoader, train: &mut ShardLoader, tokens: i64) -> Result<Tokens> {
    let t = val.seq_len() as i64;
    let fit_sequences = (tokens / t).max(0) as usize;
    let heldout_sequences = (fit_sequences / 4).max(1);
    crate::data::overlap::refuse_overlap(
        &train.spans_from_start(fit_sequences + heldout_sequences),
        &val.spans_from_start(fit_sequences),
        "the stitch's train tokens",
        "the val probe",
    )?;
    Ok(Tokens {
        probe: read_batches(val, tokens, "the val probe")?,
        fit: read_batches(train, tokens, "the stitch's train tokens")?,
        heldout: read_sequences(
            train,
            heldout_sequences,
            "the stitch's held-out train tokens",
        )?,
    })
}

/// Which stack block came from which part: the points' labels (the embedding, then each
/// block), the blocks, and the seams (the point after which part `i` begins, and `i`).
type Layout = (
    Vec<(String, Option<i64>)>,
    Vec<BlockRef>,
    Vec<(usize, usize)>,
);

fn layout(input: &InspectInput) -> Result<Layout> {
    let ls = input.stack.blocks.len();
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
    Ok((labels, blocks, seams))
}

/// What the probe gave: the stack's points, each part's alone, and at every seam what the
/// upper part received (after the boundary norm, position 0 left out).
struct Passes {
    stack: Collected,
    parts: Vec<Collected>,
    received: Vec<Vec<Tensor>>,
    /// Per stack point, how close its lens is to each part's own prediction.
    attribution: Vec<Attribution>,
}

fn run_probe(
    input: &InspectInput,
    probe: &Batches,
    seams: &[(usize, usize)],
    opts: &InspectOptions,
    progress: &mut dyn Sink,
) -> Passes {
    let (stack, dev) = (&input.stack, opts.device);
    let mut st = Collected::new(stack.blocks.len() + 1);
    let mut parts: Vec<Collected> = input
        .parts
        .iter()
        .map(|p| Collected::new(p.model.blocks.len() + 1))
        .collect();
    let mut received: Vec<Vec<Tensor>> = (0..seams.len()).map(|_| Vec::new()).collect();
    let mut attribution = vec![Attribution::default(); stack.blocks.len() + 1];
    let total: i64 = probe.iter().map(|(x, _)| x.numel() as i64).sum();
    let mut done = 0;
    tch::no_grad(|| {
        for (x, y) in probe {
            let (x, y) = (x.to_device(dev), y.to_device(dev));
            let pts = st.add(stack, &x, &y, true);
            for (s, &(after, _)) in seams.iter().enumerate() {
                let r = apply_norm(&pts[after], stack.blocks[after].pre_norm);
                received[s].push(rows_without_pos0(&r));
            }
            let own: Vec<Tensor> = input
                .parts
                .iter()
                .zip(parts.iter_mut())
                .map(|(p, c)| c.add(&p.model, &x, &y, true).pop().expect("a final point"))
                .collect();
            let finals: Vec<PartFinal> = input
                .parts
                .iter()
                .zip(&own)
                .map(|(p, r)| PartFinal {
                    residual: r,
                    wte: &p.model.wte,
                    norm_lm_head: p.model.cfg.norm_lm_head,
                })
                .collect();
            attribution::add_batch(
                &mut attribution,
                &pts,
                &stack.wte,
                stack.cfg.norm_lm_head,
                &finals,
            );
            done += x.numel() as i64;
            progress.update("probe", done, total);
        }
    });
    progress.finish();
    Passes {
        stack: st,
        parts,
        received,
        attribution,
    }
}

/// Each part alone: its points on the shared bins and its own loss.
fn part_reports(input: &InspectInput, parts: &[Collected], edges: &[f64]) -> Vec<PartReport> {
    input
        .parts
        .iter()
        .zip(parts)
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
            let pts = c.report(&lab, edges);
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
        .collect()
}

/// What a reader of the numbers should know about this stack's norms.
fn notes(input: &InspectInput) -> Vec<String> {
    let mut notes = Vec::new();
    if input.stack.cfg.norm_lm_head == NormKind::None {
        notes.push(
            "norm_lm_head = none: the logit lens's logits scale with each point's residual RMS"
                .to_string(),
        );
    }
    if input.norm_inter_model == NormKind::None {
        notes.push("norm_inter_model = none: the identity stitch is the stack itself".to_string());
    }
    notes
}

/// Runs the inspection. `val` gives the probe (from the start of the val shards); `train`
/// the tokens the stitches are fitted on.
pub fn inspect(
    input: &InspectInput,
    val: &mut ShardLoader,
    train: &mut ShardLoader,
    opts: &InspectOptions,
    progress: &mut dyn Sink,
) -> Result<InspectReport> {
    inspect_and_scan(input, val, train, opts, false, progress)
}

/// The inspection and `--scan`: every cut of the stack's two models, on the same probe, its
/// stitches fitted on the same train tokens (see [`super::scan`]). Refuses other than two
/// parts before any token is read.
pub fn inspect_with_scan(
    input: &InspectInput,
    val: &mut ShardLoader,
    train: &mut ShardLoader,
    opts: &InspectOptions,
    progress: &mut dyn Sink,
) -> Result<InspectReport> {
    inspect_and_scan(input, val, train, opts, true, progress)
}

/// Every seam's measures and stitches.
fn seam_reports(
    input: &InspectInput,
    seams: &[(usize, usize)],
    passes: &Passes,
    part_reports: &[PartReport],
    tokens: &Tokens,
    val_loss_stack: f64,
    opts: &InspectOptions,
) -> Result<Vec<SeamReport>> {
    let data = StitchData {
        fit: &tokens.fit,
        heldout: &tokens.heldout,
        probe: &tokens.probe,
    };
    let mut out = Vec::new();
    let mut prev_after = 0;
    for (s, &(after, pi)) in seams.iter().enumerate() {
        let seam = Seam {
            after,
            part: pi,
            rows_from: prev_after,
            received: &passes.received[s],
            upper_loss: part_reports[pi].val_loss,
        };
        out.push(seam_report(
            input,
            &seam,
            &passes.stack,
            &passes.parts[pi],
            &data,
            val_loss_stack,
            opts,
        )?);
        prev_after = after;
    }
    Ok(out)
}

fn inspect_and_scan(
    input: &InspectInput,
    val: &mut ShardLoader,
    train: &mut ShardLoader,
    opts: &InspectOptions,
    with_scan: bool,
    progress: &mut dyn Sink,
) -> Result<InspectReport> {
    let start = Instant::now();
    let stack = &input.stack;
    let ls = stack.blocks.len();
    if input.parts.len() < 2 {
        bail!("a stack has at least two parts");
    }
    if with_scan {
        scan::check_parts(input.parts.len())?;
    }
    let t = val.seq_len() as i64;
    let tokens = read_tokens(val, train, opts.tokens)?;
    let (labels, blocks, seams) = layout(input)?;
    let passes = run_probe(input, &tokens.probe, &seams, opts, progress);

    let all_rms = passes
        .stack
        .points
        .iter()
        .chain(passes.parts.iter().flat_map(|c| c.points.iter()))
        .flat_map(|c| c.rms.iter());
    let edges = norms::log_edges(all_rms, opts.hist_bins);
    let mut points = passes.stack.report(&labels, &edges);
    let part_labels: Vec<String> = input.parts.iter().map(|p| p.label.clone()).collect();
    for (p, a) in points.iter_mut().zip(&passes.attribution) {
        p.attribution = a.shares(&part_labels);
    }
    let val_loss_stack = points[ls].lens.loss;
    let part_reports = part_reports(input, &passes.parts, &edges);

    let seam_reports = seam_reports(
        input,
        &seams,
        &passes,
        &part_reports,
        &tokens,
        val_loss_stack,
        opts,
    )?;

    let latent = tch::no_grad(|| latent(input, &tokens.probe[0].0.to_device(opts.device)));
    let scan = with_scan
        .then(|| scan::scan(input, &tokens.fit, &tokens.probe, opts, progress))
        .transpose()?;
    Ok(InspectReport {
        schema: SCHEMA.to_string(),
        tokens: tokens.probe.iter().map(|(x, _)| x.numel() as i64).sum(),
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
        notes: notes(input),
        seconds: start.elapsed().as_secs_f64(),
        scan,
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
