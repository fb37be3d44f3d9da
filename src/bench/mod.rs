//! `stacklab bench`: full training steps (`accum` micro-batches of forward and backward, then
//! one AdamW and Muon step) of a configured model on synthetic tokens, timed after warm-up
//! with the device synchronised. The optimizer step is timed on its own too, so its share of
//! a step is reported: with `accum = 1` (what the PyTorch reference script times) it weighs
//! `accum` times more than in a training step of the same recipe.
//!
//! With `--part`, each named stage is timed on its own instead ([`parts`]): the training
//! forward, its backward, Muon, AdamW, the evaluation forward and a two-model stack's.

use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::dist::World;
use crate::model::{Compute, Gpt};
use crate::train::step::apply_optimizers_on;
use crate::train::{muon_kind, AdamW, Muon};

pub mod parallel;
pub mod parts;
pub mod report;
mod rig;

pub use parts::{Part, PartTiming, PartsReport};
pub use report::{print, print_parts};
use rig::Rig;
pub use rig::{ModelShape, RunSetup};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    #[serde(flatten)]
    pub setup: RunSetup,
    /// Micro-batches (forward + backward) per timed step, before its one optimizer step.
    pub accum: i64,
    /// What a timed step is, in words.
    pub timed: String,
    #[serde(flatten)]
    pub shape: ModelShape,
    pub step_ms: f64,
    /// Forward and backward of all the step's micro-batches.
    pub micro_batches_ms: f64,
    /// The optimizer step (gradient averaging, AdamW on W, Muon on the blocks).
    pub optimizer_ms: f64,
    /// `optimizer_ms / step_ms`.
    pub optimizer_share: f64,
    pub tokens_per_s: f64,
    pub flops_per_token: f64,
    pub model_tflops: f64,
    /// Model FLOP utilisation against `peak_tflops`, when the device's peak is known.
    pub mfu: Option<f64>,
    pub peak_tflops: Option<f64>,
    pub peak_source: Option<String>,
    #[serde(flatten)]
    pub memory: MemoryFigures,
    pub final_loss: f64,
    /// The processes that ran the bench together (`bench --nproc`); `tokens_per_s` is
    /// theirs together, `tokens_per_s_per_process` one's.
    #[serde(default = "one")]
    pub world_size: usize,
    #[serde(default)]
    pub tokens_per_s_per_process: f64,
    /// Bytes all-reduced per step: the gradients' buckets and Muon's updates (0 alone).
    #[serde(default)]
    pub all_reduce_bytes_per_step: i64,
    /// The gradient buckets of a step (0 alone), and how many of them the last timed
    /// step's backward pass started (the rest started after it).
    #[serde(default)]
    pub gradient_buckets: usize,
    #[serde(default)]
    pub buckets_started_in_backward: usize,
    /// Whether the buckets were hooked to start during backward (`--no-overlap`: not).
    #[serde(default)]
    pub overlap: bool,
}

fn one() -> usize {
    1
}

pub struct BenchOptions {
    pub config: TrainConfig,
    pub config_name: String,
    pub batch: Option<i64>,
    pub accum: i64,
    pub steps: i64,
    pub warmup: i64,
    pub device: Device,
    /// Stages to time on their own instead of full steps (`--part`); empty: full steps.
    pub parts: Vec<Part>,
    /// The processes benchmarking together (one, or a c10d group: `bench --nproc`).
    pub world: std::rc::Rc<World>,
    /// In several processes, start each gradient bucket's all-reduce during the last
    /// backward pass (off: after it, `bench --no-overlap`).
    pub overlap: bool,
}

impl BenchOptions {
    /// The micro-batch size in use, after checking the numeric flags.
    fn checked_batch(&self) -> Result<i64> {
        let b = self.batch.unwrap_or(self.config.batch.micro_batch);
        anyhow::ensure!(b > 0, "--batch {b}: must be at least 1");
        anyhow::ensure!(self.accum > 0, "--accum {}: must be at least 1", self.accum);
        anyhow::ensure!(self.steps > 0, "--steps {}: must be at least 1", self.steps);
        anyhow::ensure!(
            self.warmup >= 0,
            "--warmup {}: must be 0 or more",
            self.warmup
        );
        Ok(b)
    }
}

/// FLOPs per token of a training step (nanoGPT's estimate): 6·parameters + 12·layers·width·T.
pub fn flops_per_token(params: i64, n_layer: i64, n_embd: i64, seq_len: i64) -> f64 {
    6.0 * params as f64 + 12.0 * (n_layer * n_embd * seq_len) as f64
}

struct Optimizers {
    adamw: AdamW,
    muon: Muon,
}

impl Optimizers {
    fn new(cfg: &TrainConfig, model: &Gpt, compute: Compute) -> Optimizers {
        Optimizers {
            adamw: AdamW::new(&cfg.optimizer.adamw, &model.wte),
            muon: Muon::new(
                &cfg.optimizer.muon,
                &model.block_matrices(),
                muon_kind(compute),
            ),
        }
    }
}

/// Synthetic inputs and targets (B, T) on the device, the same for every bench run.
fn synthetic_batch(vocab: i64, b: i64, t: i64, device: Device) -> (Tensor, Tensor) {
    tch::manual_seed(1234);
    let tokens = Tensor::randint(vocab, [b, t + 1], (Kind::Int64, device));
    (
        tokens.narrow(1, 0, t).contiguous(),
        tokens.narrow(1, 1, t).contiguous(),
    )
}

/// Peak memory of a bench run, as the JSON reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// Peak memory in GiB: process RSS on the CPU, the whole device's memory in use (NVML)
    /// on CUDA.
    pub peak_memory_gib: Option<f64>,
    pub memory_kind: String,
    /// The whole device's memory in use (NVML: the CUDA context and the allocator's reserve
    /// included), the largest sample; CUDA only.
    pub nvml_memory_used_gib: Option<f64>,
    /// The CUDA caching allocator's peak of bytes allocated to tensors over the process
    /// (what `torch.cuda.max_memory_allocated` reports); CUDA only.
    pub max_memory_allocated_gib: Option<f64>,
    /// The allocator's peak reserve (`torch.cuda.max_memory_reserved`); CUDA only.
    pub max_memory_reserved_gib: Option<f64>,
}

/// Peak memory, sampled after warm-up and at the end (the allocator keeps its own peaks).
struct Memory(crate::device::memory::PeakMemory, Device);

impl Memory {
    fn new(device: Device) -> Memory {
        Memory(crate::device::memory::PeakMemory::new(device), device)
    }

    fn sample(&mut self) {
        self.0.sample();
    }

    fn report(&self) -> MemoryFigures {
        let r = self.0.report();
        let (peak_memory_gib, memory_kind) = match self.1 {
            Device::Cuda(_) => (
                r.nvml_used_gib,
                "device memory in use (NVML, whole device, sampled after warm-up and at the end); \
                 the allocator's peak is max_memory_allocated_gib"
                    .to_string(),
            ),
            _ => (
                r.process_rss_gib,
                "peak resident memory of the process".to_string(),
            ),
        };
        MemoryFigures {
            peak_memory_gib,
            memory_kind,
            nvml_memory_used_gib: r.nvml_used_gib,
            max_memory_allocated_gib: r.max_allocated_gib,
            max_memory_reserved_gib: r.max_reserved_gib,
        }
    }
}

/// Seconds of one step's micro-batches and of its optimizer step (the device synchronised
/// after each part), and the last micro-batch's loss. In several processes the gradients'
/// all-reduce is in the optimizer step with `--no-overlap`; with overlap its buckets start
/// in the last backward pass and, on a GPU (whose synchronisation waits for them), mostly
/// count in the micro-batches: compare the step times, not the parts.
fn training_step(
    rig: &mut Rig,
    world: &World,
    (c, accum): (Compute, i64),
) -> Result<(f64, f64, Tensor)> {
    let (model, device, x, y) = (&rig.model, rig.device, &rig.x, &rig.y);
    let start = Instant::now();
    let mut loss = None;
    for k in 0..accum {
        if let Some(b) = rig.buckets.as_ref().filter(|_| k + 1 == accum) {
            b.arm();
        }
        loss = Some(model.forward_backward(x, y, c));
    }
    crate::device::synchronize(device);
    let backward_done = Instant::now();
    let opt = &mut rig.opt;
    let buckets = rig.buckets.as_ref();
    apply_optimizers_on(
        model,
        Some(&mut opt.adamw),
        &mut opt.muon,
        (1.0, accum),
        world,
        buckets,
    )?;
    crate::device::synchronize(device);
    Ok((
        (backward_done - start).as_secs_f64(),
        backward_done.elapsed().as_secs_f64(),
        loss.expect("accum is at least 1"),
    ))
}

/// Times full training steps (what `bench` does without `--part`).
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let mut rig = Rig::new(opts)?;
    let (b, t, accum) = (rig.b, rig.t, opts.accum);
    let steps = time_steps(&mut rig, opts)?;
    let secs = steps.micro_s + steps.opt_s;
    let shape = rig.shape(opts);
    let fpt = flops_per_token(shape.parameters, shape.n_layer, shape.n_embd, t);
    let per_process = (accum * b * t) as f64 / secs;
    let tok_s = per_process * opts.world.size as f64;
    let tflops = fpt * tok_s / 1e12;
    let (peak, source) = peak_tflops(rig.device);
    Ok(BenchReport {
        setup: rig.setup(opts),
        accum,
        timed: format!(
            "{accum} micro-batch{} of {b} x {t} tokens (forward + backward) and 1 optimizer step",
            if accum == 1 { "" } else { "es" }
        ),
        shape,
        step_ms: secs * 1e3,
        micro_batches_ms: steps.micro_s * 1e3,
        optimizer_ms: steps.opt_s * 1e3,
        optimizer_share: steps.opt_s / secs,
        tokens_per_s: tok_s,
        flops_per_token: fpt,
        model_tflops: tflops,
        mfu: peak.map(|p| tflops / p),
        peak_tflops: peak,
        peak_source: source,
        memory: rig.memory.report(),
        final_loss: steps.last_loss,
        world_size: opts.world.size,
        tokens_per_s_per_process: per_process,
        all_reduce_bytes_per_step: rig.all_reduce_bytes(),
        gradient_buckets: rig.buckets.as_ref().map_or(0, |b| b.len()),
        buckets_started_in_backward: rig.buckets.as_ref().map_or(0, |b| b.started_in_backward()),
        overlap: rig.buckets.as_ref().is_some_and(|b| b.overlaps()),
    })
}

/// The mean seconds of a step's micro-batches and of its optimizer step, and the loss
/// the last step ended with.
struct StepTimes {
    micro_s: f64,
    opt_s: f64,
    last_loss: f64,
}

/// Runs the warm-up steps, then times `opts.steps` steps (memory sampled after each phase).
fn time_steps(rig: &mut Rig, opts: &BenchOptions) -> Result<StepTimes> {
    let (device, compute, accum) = (rig.device, rig.compute, opts.accum);
    let world = &opts.world;
    let mut last = f64::NAN;
    for _ in 0..opts.warmup {
        last = training_step(rig, world, (compute, accum))?
            .2
            .double_value(&[]);
    }
    crate::device::synchronize(device);
    rig.memory.sample();
    let (mut micro_s, mut opt_s) = (0.0, 0.0);
    let mut loss = None;
    for _ in 0..opts.steps {
        // The loss is read only at the end; the device is synchronised between the
        // micro-batches and the optimizer step so each part's time is its own.
        let (m, o, l) = training_step(rig, world, (compute, accum))?;
        micro_s += m;
        opt_s += o;
        loss = Some(l);
    }
    if let Some(l) = loss {
        last = l.double_value(&[]);
    }
    rig.memory.sample();
    Ok(StepTimes {
        micro_s: micro_s / opts.steps as f64,
        opt_s: opt_s / opts.steps as f64,
        last_loss: last,
    })
}

/// The device's bf16 peak in TFLOP/s and where that figure comes from, when known.
fn peak_tflops(device: Device) -> (Option<f64>, Option<String>) {
    match device {
        Device::Cuda(i) => match crate::device::nvml::gpu(i)
            .and_then(|g| crate::device::bf16_peak_tflops(&g.name))
        {
            Some((p, what)) => (Some(p), Some(what.to_string())),
            None => (None, None),
        },
        _ => (None, None),
    }
}
