//! The sections of a training config: the model's shape, the two optimizers, the schedule,
//! batching, data, evaluation, COCONUT steps and precision, each with the seed's defaults.

use std::fmt;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A normalisation without weights, applied to the embeddings, the lm-head input, or at a
/// stack boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    #[default]
    None,
    RmsNorm,
    LayerNorm,
}

impl NormKind {
    pub const ALL: [NormKind; 3] = [NormKind::None, NormKind::RmsNorm, NormKind::LayerNorm];
    pub fn as_str(self) -> &'static str {
        match self {
            NormKind::None => "none",
            NormKind::RmsNorm => "rms_norm",
            NormKind::LayerNorm => "layer_norm",
        }
    }
}

impl fmt::Display for NormKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NormKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        NormKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .with_context(|| {
                format!("unknown norm `{s}`: expected one of none, rms_norm, layer_norm")
            })
    }
}

/// The GPT's shape and its two outer norms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub seq_len: i64,
    pub norm_wte: NormKind,
    pub norm_lm_head: NormKind,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 50304,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            seq_len: 1024,
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
        }
    }
}

/// AdamW for the shared embedding/lm-head matrix `W`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 0.0036,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Muon for every matrix inside the transformer blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuonConfig {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub ns_steps: i64,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig {
            lr: 0.00036,
            momentum: 0.95,
            nesterov: true,
            ns_steps: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub adamw: AdamWConfig,
    pub muon: MuonConfig,
}

/// Warm-up, constant, then linear warm-down, as a factor on both optimizers' lr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub steps: i64,
    pub warmup: i64,
    pub warmdown: i64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            steps: 6200,
            warmup: 0,
            warmdown: 1800,
        }
    }
}

/// Sequences per optimizer step (`global_batch`) and per forward pass (`micro_batch`);
/// `devices` data-parallel devices each run `global_batch / devices / micro_batch`
/// accumulation steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    pub global_batch: i64,
    pub micro_batch: i64,
    pub devices: i64,
    /// Data-parallel ranks the seed's data loading is emulated for: each rank reads its own
    /// stream of the train shards (the seed ran 8); a step's micro-batches are taken rank by
    /// rank, `global_batch / (ranks * micro_batch)` from each.
    pub ranks: i64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            global_batch: 512,
            micro_batch: 64,
            devices: 1,
            ranks: 8,
        }
    }
}

impl BatchConfig {
    pub fn accumulation_steps(&self) -> i64 {
        self.global_batch / (self.micro_batch * self.devices)
    }

    /// Micro-batches each emulated rank reads per step.
    pub fn per_rank_micro_batches(&self) -> i64 {
        self.global_batch / (self.micro_batch * self.devices * self.ranks)
    }
}

/// The order in which the train shards are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShardOrder {
    /// The seed's: the sorted list shuffled by Python's `random.shuffle` after
    /// `random.seed(seed)`, so each seed reads the shards in its own order.
    #[default]
    Seed,
    /// Sorted by file name, for every seed.
    Sorted,
}

impl ShardOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardOrder::Seed => "seed",
            ShardOrder::Sorted => "sorted",
        }
    }
}

/// Training data: shard globs, or the embedded corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Use the corpus shipped with stacklab (prepared on first use).
    pub embedded: bool,
    /// Glob of training shards (modded-nanogpt format), e.g. `data/fineweb10B/fineweb_train_*.bin`.
    pub train: String,
    /// Glob of validation shards (always read in sorted order).
    pub val: String,
    /// Order of the train shards: `seed` (the seed's per-seed shuffle) or `sorted`.
    pub shard_order: ShardOrder,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Validation tokens per evaluation (from the start of the val shards).
    pub val_tokens: i64,
    /// Validate every this many steps (and at the end); 0 validates only at the end.
    pub val_every: i64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            val_tokens: 10_485_760,
            val_every: 125,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CoconutMode {
    /// The blog's definition: the input at t+1 is the output hidden state at t.
    #[default]
    Shifted,
    /// The input at t is replaced by the output hidden state at t.
    SamePosition,
    /// The seed's code: latents of one batch are scored against the next batch's targets.
    Seed,
}

impl CoconutMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CoconutMode::Shifted => "shifted",
            CoconutMode::SamePosition => "same_position",
            CoconutMode::Seed => "seed",
        }
    }
}

/// COCONUT-parallel steps: every `every`-th step adds a latent pass per micro-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoconutConfig {
    /// 0 turns COCONUT-parallel steps off.
    pub every: i64,
    pub mode: CoconutMode,
    /// Detach the latents (no gradient through the first pass), as the seed does.
    pub detach: bool,
}

impl Default for CoconutConfig {
    fn default() -> Self {
        CoconutConfig {
            every: 0,
            mode: CoconutMode::Shifted,
            detach: true,
        }
    }
}

/// Numerics of the training forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 matmuls on CUDA (the seed's autocast), fp32 on the CPU.
    #[default]
    Auto,
    Bf16,
    Fp32,
}
