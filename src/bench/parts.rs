//! `stacklab bench --part`: the cost of each stage of a step on its own, timed after warm-up
//! with the device synchronised around the stage, so the profile of a step is visible.
//!
//! - `forward`: the training forward: the blocks with the autograd graph recorded, then the
//!   chunked loss head, which computes the loss and its gradients (d hidden, d W) in the same
//!   pass, as training does;
//! - `head`: the chunked loss head alone (inside `forward`): the logits chunk by chunk, the
//!   loss, d hidden and d W from the final hidden state, with no full logits kept;
//! - `backward`: the autograd backward from those gradients through the blocks and the
//!   embedding (what follows `forward` in a training micro-batch);
//! - `muon`, `adamw`: one optimizer step on the gradients of one micro-batch;
//! - `eval`: the evaluation forward (no grad, fp32, loss only, the loss read back) as
//!   `stacklab eval` and validation score a batch;
//! - `stack-eval`: the same for a two-model stack assembled by `stacklab stack`'s own code
//!   from two freshly initialised models of the config (all blocks of both, the default
//!   boundary norms).

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;
use tch::{Device, Tensor};

use super::rig::{ModelShape, Rig, RunSetup};
use super::{BenchOptions, MemoryFigures};
use crate::model::loss::backward_from;
use crate::model::{Compute, Gpt};
use crate::stack::{assemble, BlockRange, PartView, StackNorms};

/// A stage of a step that `--part` times on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    Forward,
    Head,
    Backward,
    Muon,
    Adamw,
    Eval,
    StackEval,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Forward => "forward",
            Part::Head => "head",
            Part::Backward => "backward",
            Part::Muon => "muon",
            Part::Adamw => "adamw",
            Part::Eval => "eval",
            Part::StackEval => "stack-eval",
        }
    }
}

/// One stage's time.
#[derive(Debug, Clone, Serialize)]
pub struct PartTiming {
    pub part: Part,
    /// What one timed call is, in words.
    pub timed: String,
    /// Milliseconds per call, averaged over the timed calls.
    pub ms: f64,
    /// Tokens a call processes (0 for the optimizer steps, which process none).
    pub tokens: i64,
    /// `tokens / (ms / 1000)`, for the stages that process tokens.
    pub tokens_per_s: Option<f64>,
    /// The loss of the last call, for the stages that compute one.
    pub loss: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartsReport {
    #[serde(flatten)]
    pub setup: RunSetup,
    #[serde(flatten)]
    pub shape: ModelShape,
    pub parts: Vec<PartTiming>,
    #[serde(flatten)]
    pub memory: MemoryFigures,
}

/// Runs `f` `warmup` times untimed, then `steps` times timed (the device synchronised
/// before and after each call); returns the mean seconds and the last result.
fn timed<T>(warmup: i64, steps: i64, device: Device, mut f: impl FnMut() -> T) -> (f64, T) {
    for _ in 0..warmup {
        let _ = f();
    }
    let mut total = 0.0;
    let mut last = None;
    for _ in 0..steps {
        crate::device::synchronize(device);
        let start = Instant::now();
        let r = f();
        crate::device::synchronize(device);
        total += start.elapsed().as_secs_f64();
        last = Some(r);
    }
    (total / steps as f64, last.expect("steps is at least 1"))
}

fn zero_grads(model: &Gpt) {
    for p in model.block_matrices() {
        p.shallow_clone().zero_grad();
    }
    model.wte.shallow_clone().zero_grad();
}

/// Times each of `opts.parts` (in the order given, each once).
pub fn run(opts: &BenchOptions) -> Result<PartsReport> {
    let mut rig = Rig::new(opts)?;
    let (warmup, steps) = (opts.warmup, opts.steps);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for &part in &opts.parts {
        if seen.contains(&part) {
            continue;
        }
        seen.push(part);
        let timing = match part {
            Part::Forward | Part::Backward => time_half_step(&rig, part, warmup, steps),
            Part::Muon | Part::Adamw => time_optimizer(&mut rig, part, warmup, steps),
            Part::Head => time_head(&rig, warmup, steps),
            Part::Eval | Part::StackEval => time_eval(&rig, part, warmup, steps)?,
        };
        rig.memory.sample();
        out.push(timing);
    }
    Ok(PartsReport {
        setup: rig.setup(opts),
        shape: rig.shape(opts),
        parts: out,
        memory: rig.memory.report(),
    })
}

/// `forward` or `backward`: each call is a forward then a backward; only the named half
/// is timed.
fn time_half_step(rig: &Rig, part: Part, warmup: i64, steps: i64) -> PartTiming {
    let (model, device, compute) = (&rig.model, rig.device, rig.compute);
    let (b, t) = (rig.b, rig.t);
    let tokens = b * t;
    let want_forward = part == Part::Forward;
    let run_one = || {
        crate::device::synchronize(device);
        let start = Instant::now();
        let hidden = model.hidden(&rig.x, compute);
        let l = model.lm_loss(&hidden, &rig.y, compute, true);
        crate::device::synchronize(device);
        let forward_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        backward_from(&model.wte, &[(&hidden, &l)]);
        crate::device::synchronize(device);
        let backward_s = start.elapsed().as_secs_f64();
        zero_grads(model);
        (if want_forward { forward_s } else { backward_s }, l.loss)
    };
    for _ in 0..warmup {
        let _ = run_one();
    }
    let mut total = 0.0;
    let mut loss = None;
    for _ in 0..steps {
        let (s, l) = run_one();
        total += s;
        loss = Some(l);
    }
    let ms = total / steps as f64 * 1e3;
    let what = if want_forward {
        "blocks with the autograd graph, then the chunked loss head (loss, d hidden, d W)"
    } else {
        "autograd backward through the blocks and the embedding"
    };
    PartTiming {
        part,
        timed: format!("{what}, {b} x {t} tokens"),
        ms,
        tokens,
        tokens_per_s: Some(tokens as f64 / (ms / 1e3)),
        loss: loss.map(|l| l.double_value(&[])),
    }
}

/// `muon` or `adamw`: one optimizer step on the gradients of one micro-batch.
fn time_optimizer(rig: &mut Rig, part: Part, warmup: i64, steps: i64) -> PartTiming {
    let model = &rig.model;
    let opt = &mut rig.opt;
    zero_grads(model);
    let _ = model.forward_backward(&rig.x, &rig.y, rig.compute);
    let params = model.block_matrices();
    let (s, ()) = timed(warmup, steps, rig.device, || match part {
        Part::Muon => opt.muon.step(&params, 1.0),
        _ => opt.adamw.step(&model.wte, 1.0),
    });
    zero_grads(model);
    let timed = match part {
        Part::Muon => format!(
            "one Muon step on {} block matrices (Newton-Schulz in {:?})",
            params.len(),
            opt.muon.ns_kind
        ),
        _ => "one AdamW step on W".to_string(),
    };
    PartTiming {
        part,
        timed,
        ms: s * 1e3,
        tokens: 0,
        tokens_per_s: None,
        loss: None,
    }
}

/// `head`: the blocks' output once, then the head on it, as training runs it.
fn time_head(rig: &Rig, warmup: i64, steps: i64) -> PartTiming {
    let (model, compute, b, t) = (&rig.model, rig.compute, rig.b, rig.t);
    let hidden = tch::no_grad(|| model.hidden(&rig.x, compute));
    let (s, loss) = timed(warmup, steps, rig.device, || {
        model.lm_loss(&hidden, &rig.y, compute, true).loss
    });
    PartTiming {
        part: Part::Head,
        timed: format!(
            "the chunked loss head: logits, loss, d hidden and d W (vocab {}), {b} x {t} tokens",
            rig.cfg.model.vocab_size
        ),
        ms: s * 1e3,
        tokens: b * t,
        tokens_per_s: Some((b * t) as f64 / s),
        loss: Some(loss.double_value(&[])),
    }
}

/// `eval` or `stack-eval`: an evaluation batch of the model, or of a two-model stack.
fn time_eval(rig: &Rig, part: Part, warmup: i64, steps: i64) -> Result<PartTiming> {
    let (cfg, device, b, t) = (rig.cfg, rig.device, rig.b, rig.t);
    let (x, y) = (&rig.x, &rig.y);
    let (s, loss) = if part == Part::Eval {
        timed(warmup, steps, device, || eval_batch(&rig.model, x, y))
    } else {
        let second = Gpt::new(&cfg.model, cfg.seed + 1, device);
        let stack = two_model_stack(&rig.model, &second, t)?;
        timed(warmup, steps, device, || eval_batch(&stack, x, y))
    };
    let what = if part == Part::Eval {
        format!("evaluation forward (no grad, fp32, loss read back), {b} x {t} tokens")
    } else {
        format!(
            "evaluation forward of a stack of two {}-block models, {b} x {t} tokens",
            cfg.model.n_layer
        )
    };
    Ok(PartTiming {
        part,
        timed: what,
        ms: s * 1e3,
        tokens: b * t,
        tokens_per_s: Some((b * t) as f64 / s),
        loss: Some(loss),
    })
}

/// One evaluation batch as `evaluate_many` scores it: fp32, no grad, the loss read back.
fn eval_batch(model: &Gpt, x: &Tensor, y: &Tensor) -> f64 {
    tch::no_grad(|| model.loss(x, y, Compute::Fp32).double_value(&[]))
}

/// `first` (all its blocks) then `second` (all its blocks), as `stacklab stack` builds it.
fn two_model_stack(first: &Gpt, second: &Gpt, seq_len: i64) -> Result<Gpt> {
    let parts = [("m1", first), ("m2", second)].map(|(label, model)| PartView {
        label,
        name: label,
        model,
        range: BlockRange::new(0, model.blocks.len() as i64),
        trained_norms: None,
    });
    crate::stack::assemble::check(&parts, false)?;
    Ok(assemble(&parts, &StackNorms::default(), seq_len).model)
}
