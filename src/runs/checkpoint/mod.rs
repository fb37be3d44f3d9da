//! Checkpoints: a folder `step_NNNNNN/` holding `model.safetensors` (the seed's tensor
//! names), `optimizer.safetensors`, the run's `config.toml` and `meta.toml`.
//!
//! A checkpoint is built in a hidden temporary folder and renamed into place once every file
//! is written and synced, `meta.toml` last; only `step_*` folders with a `meta.toml` count.
//! A crash or `kill -9` at any moment leaves at most a hidden temporary folder behind.
//!
//! This file holds the format (file names, metadata, folder names); the writing is in
//! `write.rs`, the reading in `load.rs`.

mod load;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::ModelConfig;
use crate::data::{LoaderState, TrainStreamState};
use crate::model::BlockLayout;

pub use load::{sha256_file, Checkpoint, CheckpointRef};
pub use write::{write_checkpoint, write_weights_checkpoint};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const META_FILE: &str = "meta.toml";
pub const CONFIG_FILE: &str = "config.toml";

/// Test hook: `STACKLAB_FAULT_KILL_IN_CHECKPOINT=N` kills the process with SIGKILL in the
/// middle of writing the checkpoint of step N (after the weights, before the metadata).
pub const FAULT_ENV: &str = "STACKLAB_FAULT_KILL_IN_CHECKPOINT";

/// Where `W` came from when it was copied and frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The parent checkpoint, as it was named when the run started.
    pub name: String,
    /// SHA-256 of the parent's `W` (fp32 bytes).
    pub wte_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValPoint {
    pub step: i64,
    pub val_loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// `<run>/step_NNNNNN`.
    pub name: String,
    pub step: i64,
    pub total_steps: i64,
    pub tokens_seen: i64,
    pub seed: i64,
    /// Seconds of training (steps, validation, checkpoints) up to this checkpoint.
    pub train_time_s: f64,
    pub device: String,
    pub stacklab_version: String,
    pub git_commit: String,
    pub created_at: String,
    /// SHA-256 of this model's `W`: children trained `from_model` record it as lineage.
    pub wte_sha256: String,
    pub wte_frozen: bool,
    /// Validation tokens the run used (the default for `eval`).
    pub val_tokens: i64,
    /// Model shape and the norms it was trained with.
    pub model: ModelConfig,
    /// Where each emulated rank stands in the train shards, and the shard order.
    #[serde(default)]
    pub train_data: TrainStreamState,
    /// The single loader position of checkpoints written before per-rank data (read only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_position: Option<LoaderState>,
    pub adamw_step: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from_model: Option<Lineage>,
    #[serde(default)]
    pub val_loss_history: Vec<ValPoint>,
    /// The checkpoint the run's weights started from (`init_from`), when not from scratch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub init_from: Option<InitLineage>,
    /// Per-block attention scale, heads and boundary norm, when they are not what `model`
    /// implies (a stack, or a run trained from one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockLayout>,
}

/// Where a run's initial weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitLineage {
    /// The checkpoint as it was named when the run started.
    pub name: String,
    /// SHA-256 of its weights file.
    pub sha256: String,
}

pub fn checkpoint_dir_name(step: i64) -> String {
    format!("step_{step:06}")
}

/// The step of a checkpoint folder name (`step_000100` is 100).
pub fn step_of(name: &str) -> Option<i64> {
    name.strip_prefix("step_").and_then(|s| s.parse().ok())
}

/// The valid checkpoints in a run folder, by step.
pub fn list_checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = step_of(&name)?;
            let p = e.path();
            p.join(META_FILE).is_file().then_some((step, p))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Cleans up after a crash while writing checkpoints: removes unfinished temporary folders,
/// and puts back a checkpoint that was moved aside to be rewritten if the new one never
/// arrived.
pub fn remove_stale_temporaries(run: &Path) {
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        if !rest.starts_with("step_") {
            continue;
        }
        if let Some((final_name, _)) = rest.split_once(".old-") {
            let final_dir = run.join(final_name);
            if !final_dir.exists() && e.path().join(META_FILE).is_file() {
                let _ = std::fs::rename(e.path(), &final_dir);
                continue;
            }
        }
        if name.contains(".tmp-") || name.contains(".old-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What a checkpoint holds besides the model.
pub struct OptimizerTensors {
    pub adamw: Option<(Tensor, Tensor)>,
    /// Muon momentum buffers by parameter name.
    pub muon: BTreeMap<String, Tensor>,
}
