//! What both benches time on (the configured model, its optimizers, one synthetic batch
//! and a peak-memory sampler), and the report fields that describe it.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::{synthetic_batch, BenchOptions, Memory, Optimizers};
use crate::config::TrainConfig;
use crate::dist::{GradBuckets, BUCKET_BYTES};
use crate::model::{Compute, Gpt};
use crate::train::step::trained_parameters;

/// Where and how a bench ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSetup {
    pub config: String,
    pub device: String,
    /// How libtorch's CPU threads wait ([`crate::device::cpu`]).
    pub cpu_wait_policy: String,
    /// How freed CPU memory is kept ([`crate::device::cpu`]).
    pub cpu_malloc: String,
    /// The training numerics (evaluation is always fp32).
    pub compute: String,
    /// Sequences per micro-batch.
    pub batch: i64,
}

/// The model a bench ran and how many calls it timed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelShape {
    pub seq_len: i64,
    pub n_layer: i64,
    pub n_embd: i64,
    pub vocab_size: i64,
    pub parameters: i64,
    pub warmup_steps: i64,
    pub steps: i64,
}

pub(super) struct Rig<'a> {
    pub cfg: &'a TrainConfig,
    pub device: Device,
    /// Sequences per micro-batch and tokens per sequence.
    pub b: i64,
    pub t: i64,
    pub compute: Compute,
    pub model: Gpt,
    pub opt: Optimizers,
    pub x: Tensor,
    pub y: Tensor,
    pub memory: Memory,
    /// The gradients' all-reduce buffers, in several processes.
    pub buckets: Option<GradBuckets>,
    /// Newton-Schulz's dtype (Muon's all-reduced updates).
    ns_kind: tch::Kind,
}

impl Rig<'_> {
    /// A trainable model of the config with fresh optimizers and the bench's batch.
    pub fn new(opts: &BenchOptions) -> Result<Rig<'_>> {
        let cfg = &opts.config;
        let device = opts.device;
        let b = opts.checked_batch()?;
        let t = cfg.model.seq_len;
        let compute = Compute::for_training(device, cfg.precision);
        let mut model = Gpt::new(&cfg.model, cfg.seed, device);
        model.set_trainable(true);
        let opt = Optimizers::new(cfg, &model, compute);
        let (x, y) = synthetic_batch(cfg.model.vocab_size, b, t, device);
        let buckets = match opts.world.group().filter(|_| opts.world.size > 1) {
            Some(g) => {
                let params = trained_parameters(&model, true);
                Some(GradBuckets::new(g, &params, BUCKET_BYTES, opts.overlap)?)
            }
            None => None,
        };
        Ok(Rig {
            buckets,
            ns_kind: crate::train::muon_kind(compute),
            cfg,
            device,
            b,
            t,
            compute,
            model,
            opt,
            x,
            y,
            memory: Memory::new(device),
        })
    }

    /// Bytes all-reduced per step in several processes: the gradients' buckets and Muon's
    /// updates (in Newton-Schulz's dtype); 0 in one process.
    pub fn all_reduce_bytes(&self) -> i64 {
        let Some(b) = &self.buckets else {
            return 0;
        };
        let muon: i64 = self
            .model
            .block_matrices()
            .iter()
            .map(|p| p.numel() as i64)
            .sum();
        let width = if self.ns_kind == tch::Kind::BFloat16 {
            2
        } else {
            4
        };
        b.bytes() + muon * width
    }

    pub fn setup(&self, opts: &BenchOptions) -> RunSetup {
        RunSetup {
            config: opts.config_name.clone(),
            device: crate::device::describe(self.device),
            cpu_wait_policy: crate::device::cpu::omp_wait_policy(),
            cpu_malloc: crate::device::cpu::malloc_policy().to_string(),
            compute: format!("{:?}", self.compute),
            batch: self.b,
        }
    }

    pub fn shape(&self, opts: &BenchOptions) -> ModelShape {
        let m = &self.cfg.model;
        ModelShape {
            seq_len: self.t,
            n_layer: m.n_layer,
            n_embd: m.n_embd,
            vocab_size: m.vocab_size,
            parameters: self.model.num_parameters(),
            warmup_steps: opts.warmup,
            steps: opts.steps,
        }
    }
}
