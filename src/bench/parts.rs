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

use super::{synthetic_batch, BenchOptions, Memory, MemoryFigures, Optimizers};
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
    pub config: String,
    pub device: String,
    /// How libtorch's CPU threads wait ([`crate::model::cpu`]).
    pub cpu_wait_policy: String,
    /// How freed CPU memory is kept ([`crate::model::cpu`]).
    pub cpu_malloc: String,
    /// The training numerics (`forward`, `backward`, `muon`); evaluation is always fp32.
    pub compute: String,
    pub batch: i64,
    pub seq_len: i64,
    pub n_layer: i64,
    pub n_embd: i64,
    pub vocab_size: i64,
    pub parameters: i64,
    pub warmup_steps: i64,
    pub steps: i64,
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
    let cfg = &opts.config;
    let device = opts.device;
    let b = opts.checked_batch()?;
    let t = cfg.model.seq_len;
    let tokens = b * t;
    let compute = Compute::for_training(device, cfg.precision);
    let mut model = Gpt::new(&cfg.model, cfg.seed, device);
    model.set_trainable(true);
    let mut opt = Optimizers::new(cfg, &model, compute);
    let (x, y) = synthetic_batch(cfg.model.vocab_size, b, t, device);
    let mut memory = Memory::new(device);
    let (warmup, steps) = (opts.warmup, opts.steps);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for &part in &opts.parts {
        if seen.contains(&part) {
            continue;
        }
        seen.push(part);
        let timing = match part {
            Part::Forward | Part::Backward => {
                // Each call is a forward then a backward; only the named half is timed.
                let want_forward = part == Part::Forward;
                let run_one = || {
                    crate::device::synchronize(device);
                    let start = Instant::now();
                    let hidden = model.hidden(&x, compute);
                    let l = model.lm_loss(&hidden, &y, compute, true);
                    crate::device::synchronize(device);
                    let forward_s = start.elapsed().as_secs_f64();
                    let start = Instant::now();
                    backward_from(&model.wte, &[(&hidden, &l)]);
                    crate::device::synchronize(device);
                    let backward_s = start.elapsed().as_secs_f64();
                    zero_grads(&model);
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
            Part::Muon | Part::Adamw => {
                zero_grads(&model);
                let _ = model.forward_backward(&x, &y, compute);
                let params = model.block_matrices();
                let (s, ()) = timed(warmup, steps, device, || match part {
                    Part::Muon => opt.muon.step(&params, 1.0),
                    _ => opt.adamw.step(&model.wte, 1.0),
                });
                zero_grads(&model);
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
            Part::Head => {
                // The blocks' output once, then the head on it, as training runs it.
                let hidden = tch::no_grad(|| model.hidden(&x, compute));
                let (s, loss) = timed(warmup, steps, device, || {
                    model.lm_loss(&hidden, &y, compute, true).loss
                });
                PartTiming {
                    part,
                    timed: format!(
                        "the chunked loss head: logits, loss, d hidden and d W (vocab {}), {b} x {t} tokens",
                        cfg.model.vocab_size
                    ),
                    ms: s * 1e3,
                    tokens,
                    tokens_per_s: Some(tokens as f64 / s),
                    loss: Some(loss.double_value(&[])),
                }
            }
            Part::Eval | Part::StackEval => {
                let (s, loss) = if part == Part::Eval {
                    timed(warmup, steps, device, || eval_batch(&model, &x, &y))
                } else {
                    let second = Gpt::new(&cfg.model, cfg.seed + 1, device);
                    let stack = two_model_stack(&model, &second, t)?;
                    timed(warmup, steps, device, || eval_batch(&stack, &x, &y))
                };
                let what = if part == Part::Eval {
                    format!("evaluation forward (no grad, fp32, loss read back), {b} x {t} tokens")
                } else {
                    format!(
                        "evaluation forward of a stack of two {}-block models, {b} x {t} tokens",
                        cfg.model.n_layer
                    )
                };
                PartTiming {
                    part,
                    timed: what,
                    ms: s * 1e3,
                    tokens,
                    tokens_per_s: Some(tokens as f64 / s),
                    loss: Some(loss),
                }
            }
        };
        memory.sample();
        out.push(timing);
    }
    Ok(PartsReport {
        config: opts.config_name.clone(),
        device: crate::device::describe(device),
        cpu_wait_policy: crate::model::cpu::omp_wait_policy(),
        cpu_malloc: crate::model::cpu::malloc_policy().to_string(),
        compute: format!("{compute:?}"),
        batch: b,
        seq_len: t,
        n_layer: cfg.model.n_layer,
        n_embd: cfg.model.n_embd,
        vocab_size: cfg.model.vocab_size,
        parameters: model.num_parameters(),
        warmup_steps: warmup,
        steps,
        parts: out,
        memory: memory.report(),
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
