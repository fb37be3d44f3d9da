//! Everything a training loop needs, built and checked before the first step: the data
//! (per-rank train streams, val loader), the model (fresh, `init_from`, `W` from
//! `from_model`), the optimizers, and the run directory. A new run's folder is created
//! exclusively and locked first (`claim.rs`); a config it refuses removes it again, so a
//! refused config leaves nothing on disk.
//!
//! This file holds the options, the state and the data; a new run is built in `fresh.rs`, a
//! resumed one in `resume.rs`.

mod claim;
mod follower;
mod fresh;
mod resume;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::{Device, Kind};

use super::{AdamW, Muon};
use crate::config::{ConfigError, TrainConfig};
use crate::data::{expand_glob, ordered_shards, DataSource, ShardLoader, TrainStream};
use crate::dist::{GradBuckets, World};
use crate::model::{Compute, Gpt};
use crate::runs::checkpoint::{InitLineage, Lineage, ValPoint};
use crate::runs::lock::RunLock;
use crate::runs::run_dir::{RunDir, RunState, RunStatus};
use crate::train::faults::Stage;

pub use follower::{follower_state, share_failure, share_state};
pub use fresh::new_run;
pub use resume::resume_run;

pub struct TrainOptions {
    /// A new run's config (ignored when resuming: the run's own config is used).
    pub config: Option<TrainConfig>,
    /// Name for a new run; default `<config name>-<date>-<time>`.
    pub name: Option<String>,
    /// The config's name, for the default run name.
    pub config_name: String,
    /// Continue this run directory from its latest checkpoint.
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint, status `stopped`) once this global step is done.
    pub stop_after: Option<i64>,
    pub device: Device,
    /// Where new run directories are created.
    pub runs_root: PathBuf,
    /// The processes training together (one, or a c10d group).
    pub world: Rc<World>,
    /// In a group, start each gradient bucket's all-reduce while the step's last backward
    /// pass runs (`train --no-overlap`: after it).
    pub overlap: bool,
}

/// Everything the loop mutates.
pub struct State {
    pub cfg: TrainConfig,
    pub run: RunDir,
    pub device: Device,
    pub compute: Compute,
    pub model: Gpt,
    pub adamw: Option<AdamW>,
    pub muon: Muon,
    pub train: TrainStream,
    pub val: ShardLoader,
    pub step: i64,
    pub tokens_seen: i64,
    pub time_before: f64,
    pub started: Instant,
    pub val_history: Vec<ValPoint>,
    pub from_model: Option<Lineage>,
    pub init_from: Option<InitLineage>,
    pub config_toml: String,
    pub last_checkpoint_step: Option<i64>,
    /// What the loop is doing, for the message of a failure there.
    pub stage: Stage,
    /// The run folder's lock, held until the state is dropped (after the final status);
    /// rank 0's alone in a data-parallel training.
    pub lock: Option<RunLock>,
    /// The processes training together; rank 0 alone writes the run's files.
    pub world: Rc<World>,
    /// The gradients' all-reduce buffers, when several processes train.
    pub buckets: Option<GradBuckets>,
}

/// The model and optimizers a run starts with, what its weights came from, and where its
/// counters stand (step 0, or a checkpoint's).
pub(super) struct Start {
    pub model: Gpt,
    pub adamw: Option<AdamW>,
    pub muon: Muon,
    pub from_model: Option<Lineage>,
    pub init_from: Option<InitLineage>,
    pub at: StartPoint,
}

/// Where the loop starts counting.
#[derive(Default)]
pub(super) struct StartPoint {
    pub step: i64,
    pub tokens_seen: i64,
    /// Training seconds before this process.
    pub time_before: f64,
    pub val_history: Vec<ValPoint>,
    pub last_checkpoint_step: Option<i64>,
}

impl State {
    /// The state of `run` trained with `cfg` from `start`, holding the run's lock.
    pub(super) fn new(
        cfg: TrainConfig,
        run: RunDir,
        lock: Option<RunLock>,
        device: Device,
        data: (TrainStream, ShardLoader),
        start: Start,
    ) -> State {
        let (train, val) = data;
        let at = start.at;
        State {
            compute: Compute::for_training(device, cfg.precision),
            config_toml: cfg.to_toml_string(),
            cfg,
            run,
            device,
            model: start.model,
            adamw: start.adamw,
            muon: start.muon,
            train,
            val,
            step: at.step,
            tokens_seen: at.tokens_seen,
            time_before: at.time_before,
            started: Instant::now(),
            val_history: at.val_history,
            from_model: start.from_model,
            init_from: start.init_from,
            last_checkpoint_step: at.last_checkpoint_step,
            stage: Default::default(),
            lock,
            world: Rc::new(World::single()),
            buckets: None,
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.time_before + self.started.elapsed().as_secs_f64()
    }

    /// Writes the run's status (rank 0's job; the other ranks write none).
    pub fn status(&self, state: RunState, message: &str) -> Result<()> {
        if !self.world.is_main() {
            return Ok(());
        }
        let (pid, start_time) = crate::runs::process::training_process();
        self.run.write_status(&RunStatus {
            state,
            pid,
            step: self.step,
            total_steps: self.cfg.schedule.steps,
            message: message.to_string(),
            updated_at: chrono::Local::now().to_rfc3339(),
            start_time,
            device: Some(crate::device::slots::training_label(self.device)),
            world_size: Some(self.world.size),
        })
    }

    /// Appends a row to the run's metrics (rank 0's job).
    pub fn append_metrics(&self, row: &crate::runs::run_dir::MetricsRow) -> Result<()> {
        if self.world.is_main() {
            self.run.append_metrics(row)?;
        }
        Ok(())
    }
}

/// Newton-Schulz's dtype for a training compute mode (bf16 on CUDA, fp32 on the CPU).
pub fn muon_kind(compute: Compute) -> Kind {
    match compute {
        Compute::Bf16 => Kind::BFloat16,
        Compute::Fp32 => Kind::Float,
    }
}

/// A fresh Muon for `model`'s block matrices, in the precision `cfg` trains with.
fn new_muon(cfg: &TrainConfig, model: &Gpt, device: Device) -> Muon {
    let compute = Compute::for_training(device, cfg.precision);
    Muon::new(
        &cfg.optimizer.muon,
        &model.block_matrices(),
        muon_kind(compute),
    )
}

fn config_err(key: &str, message: String) -> anyhow::Error {
    ConfigError {
        source: "config".into(),
        key: key.into(),
        message,
    }
    .into()
}

/// The train stream (per-rank, in the configured shard order) and the val loader, with
/// `eval.val_tokens` checked against what the val shards hold.
pub fn open_data(cfg: &TrainConfig) -> Result<(TrainStream, ShardLoader, DataSource)> {
    let source = DataSource::from_config(&cfg.data)?;
    let t = cfg.model.seq_len as usize;
    let b = cfg.batch.micro_batch as usize;
    let files = expand_glob(&source.train).context("data.train")?;
    let files = ordered_shards(files, cfg.data.shard_order, cfg.seed);
    let train = TrainStream::new(
        files,
        b,
        t,
        cfg.batch.ranks as usize,
        cfg.batch.per_rank_micro_batches() as usize,
    )
    .context("data.train")?;
    let val = ShardLoader::from_glob(&source.val, b, t).context("data.val")?;
    let sequences = (cfg.eval.val_tokens / cfg.model.seq_len) as usize;
    if !val.fits_from_start(sequences) {
        return Err(config_err(
            "eval.val_tokens",
            format!(
                "{} tokens is more than the val shards ({}) hold in {}-token sequences read {} at a time: at most {} tokens",
                cfg.eval.val_tokens,
                source.val,
                t,
                b,
                val.max_sequences_from_start() * t
            ),
        ));
    }
    Ok((train, val, source))
}

/// Whether every weight is finite (a run that diverged is not checkpointed).
pub fn weights_finite(model: &Gpt) -> bool {
    tch::no_grad(|| {
        model
            .named_parameters()
            .iter()
            .all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1)
    })
}
