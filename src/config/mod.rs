//! Typed experiment configs: one struct tree for a training run, read from TOML, with
//! `--set key.path=value` overrides and errors that name the file, the key and what is allowed.
//!
//! Missing keys take the seed's GPT-2-small recipe (see `configs/gpt2-small-seed.toml`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use keys::{apply_override, ConfigError};
use keys::{apply_overrides, blame_overrides, check_keys, err, schema};
pub use sections::{
    AdamWConfig, BatchConfig, CoconutConfig, CoconutMode, DataConfig, EvalConfig, ModelConfig,
    MuonConfig, NormKind, OptimizerConfig, Precision, ScheduleConfig, ShardOrder,
};

pub mod bounds;
mod keys;
pub mod lab;
mod sections;
#[cfg(test)]
mod tests;
mod validate;
use serde::{Deserialize, Serialize};

/// One training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: i64,
    /// Write a checkpoint every this many steps (and always at the end); 0: only at the end.
    pub checkpoint_every: i64,
    /// Keep only the newest this many checkpoints (older ones are removed once a new one is
    /// complete; ones another run's lineage names stay); 0 keeps every checkpoint.
    pub checkpoint_keep_last: i64,
    /// With `checkpoint_keep_last`, also keep every checkpoint whose step is a multiple of
    /// this (e.g. for loss-curve studies); 0: none.
    pub checkpoint_keep_every: i64,
    /// Print a progress line every this many steps when not on a terminal.
    pub log_every: i64,
    /// A checkpoint whose embedding/head `W` is copied and frozen (model 2 of a stack).
    pub from_model: String,
    /// A checkpoint (run, folder, seed-named `.safetensors`, or a saved stack) whose weights
    /// the run starts from, with fresh optimizer state; composes with `from_model`.
    pub init_from: String,
    pub precision: Precision,
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub batch: BatchConfig,
    pub data: DataConfig,
    pub eval: EvalConfig,
    pub coconut: CoconutConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            checkpoint_every: 1000,
            checkpoint_keep_last: 0,
            checkpoint_keep_every: 0,
            log_every: 10,
            from_model: String::new(),
            init_from: String::new(),
            precision: Precision::Auto,
            model: ModelConfig::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            batch: BatchConfig::default(),
            data: DataConfig {
                embedded: false,
                train: "data/fineweb10B/fineweb_train_*.bin".into(),
                val: "data/fineweb10B/fineweb_val_*.bin".into(),
                shard_order: ShardOrder::Seed,
            },
            eval: EvalConfig::default(),
            coconut: CoconutConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a config file, applies `--set` overrides, and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (named `source` in errors), applies overrides, validates.
    pub fn from_toml_str(text: &str, source: &str, overrides: &[String]) -> Result<TrainConfig> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            err(source, "", format!("not valid TOML{line}: {}", e.message()))
        })?;
        check_keys(&table, &schema(), "", source)?;
        let file_table = table.clone();
        apply_overrides(&mut table, overrides)?;
        let typed = |t: toml::Table| -> Result<TrainConfig> {
            let cfg: TrainConfig = serde_path_to_error::deserialize(toml::Value::Table(t))
                .map_err(|e| err(source, &e.path().to_string(), e.inner().to_string()))?;
            cfg.validate(source)?;
            Ok(cfg)
        };
        match typed(table) {
            Ok(cfg) => Ok(cfg),
            Err(e) if !overrides.is_empty() => {
                let file_alone_valid = typed(file_table).is_ok();
                Err(blame_overrides(e, overrides, file_alone_valid))
            }
            Err(e) => Err(e),
        }
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a config serialises to TOML")
    }

    /// Tokens of one optimizer step.
    pub fn tokens_per_step(&self) -> i64 {
        self.batch.global_batch * self.model.seq_len
    }
}

/// Finds a config by path, or by name in the config dir (`tiny` -> `configs/tiny.toml`).
pub fn resolve_config_path(name: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(name);
    if direct.is_file() {
        return Ok(direct);
    }
    let dir = crate::paths::config_dir();
    for candidate in [dir.join(name), dir.join(format!("{name}.toml"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "config `{name}` not found (looked at {} and in {})",
        direct.display(),
        dir.display()
    )
}
