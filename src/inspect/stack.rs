//! Inspecting a prepared stack: the probe (val shards) and the train tokens its stitches are
//! fitted on, chosen from the options, then [`super::inspect`]. What `inspect` computes, as
//! a library function: the command only parses flags, prints and writes the figures.

use anyhow::{bail, Context, Result};
use tch::Device;

use super::input::{InspectInput, InspectOptions, PartInput};
use super::report::InspectReport;
use super::run::{inspect, inspect_with_scan};
use crate::data::ShardLoader;
use crate::progress::Sink;
use crate::runs::CheckpointRef;
use crate::stack::assemble;
use crate::stack::selection::{data_source, first_train_glob, EvalOptions, Prepared};

/// What an inspection does beyond the stack and its data.
#[derive(Debug, Clone)]
pub struct SeamOptions {
    /// Adam steps of each seam's trained stitch (0: least squares only).
    pub stitch: i64,
    pub stitch_lr: f64,
    /// Bins of the residual-norm histograms.
    pub hist_bins: usize,
    /// Also scan every cut of the two models (`--scan`: exactly two parts).
    pub scan: bool,
}

impl SeamOptions {
    /// Refuses what no inspection can use (before any model is loaded).
    pub fn check(&self) -> Result<()> {
        if self.stitch < 0 {
            bail!("--stitch {}: must be 0 or more", self.stitch);
        }
        if self.hist_bins < 2 {
            bail!("--hist-bins {}: must be at least 2", self.hist_bins);
        }
        Ok(())
    }
}

/// The probe's default size: enough tokens for CKA at width 768.
pub const DEFAULT_TOKENS: i64 = 16_384;

/// Where the stitches are fitted: `--train-data`, the embedded corpus's train split with
/// `--data embedded`, else the first model's training data.
fn train_glob(eval: &EvalOptions, first: &CheckpointRef) -> Result<String> {
    if let Some(g) = &eval.train_data {
        return Ok(g.clone());
    }
    if eval.data.as_deref() == Some("embedded") {
        return Ok(crate::data::embedded::ensure_prepared()?.train_glob());
    }
    match first_train_glob(first)? {
        Some(g) => Ok(g),
        None => bail!(
            "{}: a seed-format file does not say which data it was trained on; give --train-data GLOB (the stitches are fitted on train tokens)",
            first.name()
        ),
    }
}

/// Inspects the prepared stack: each part alone and the stack on the same probe tokens.
pub fn inspect_stack(
    p: &Prepared,
    eval: &EvalOptions,
    opts: &SeamOptions,
    device: Device,
    progress: &mut dyn Sink,
) -> Result<InspectReport> {
    opts.check()?;
    if opts.scan {
        super::scan::check_parts(p.part_of.len())?;
    }
    let (val_glob, _, _) = data_source(eval, p.first())?;
    let train = train_glob(eval, p.first())?;
    let parts = p.parts();
    let seq_len = eval.seq_len.unwrap_or(parts[0].model.cfg.seq_len);
    let batch = eval.batch.unwrap_or(if device.is_cuda() { 16 } else { 8 });
    let tokens = eval.tokens.unwrap_or(DEFAULT_TOKENS);
    for (flag, v) in [
        ("--seq-len", seq_len),
        ("--batch", batch),
        ("--tokens", tokens),
    ] {
        if v <= 0 {
            bail!("{flag} {v}: must be at least 1");
        }
    }
    let mut val = ShardLoader::from_glob(&val_glob, batch as usize, seq_len as usize)
        .with_context(|| format!("--data {val_glob}"))?;
    let mut train_loader = ShardLoader::from_glob(&train, batch as usize, seq_len as usize)
        .with_context(|| format!("--train-data {train}"))?;
    let stack = assemble::assemble(&parts, &p.norms, seq_len);
    let input = InspectInput {
        stack: stack.model,
        parts: parts
            .iter()
            .map(|v| PartInput {
                label: v.label.to_string(),
                path: v.name.to_string(),
                model: {
                    let mut m = v.model.shallow_clone();
                    m.cfg.seq_len = seq_len;
                    m
                },
                start: v.range.start,
                end: v.range.end,
            })
            .collect(),
        norm_inter_model: p.norms.norm_inter_model,
    };
    let run_opts = InspectOptions {
        tokens,
        batch: batch as usize,
        stitch_steps: opts.stitch,
        stitch_lr: opts.stitch_lr,
        hist_bins: opts.hist_bins,
        device,
    };
    if opts.scan {
        inspect_with_scan(&input, &mut val, &mut train_loader, &run_opts, progress)
    } else {
        inspect(&input, &mut val, &mut train_loader, &run_opts, progress)
    }
}
