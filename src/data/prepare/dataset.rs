//! A prepared dataset folder and the summary (`dataset.toml`) written beside its shards.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::DATASET_FILE;

pub(super) fn last_fraction() -> String {
    "last_fraction".into()
}

/// The summary written beside the shards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    pub tokenizer: String,
    pub vocab_size: usize,
    pub eot_token: Option<u32>,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub train_shards: Vec<String>,
    pub val_shards: Vec<String>,
    pub sources: Vec<String>,
    /// `val_tokens / (train_tokens + val_tokens)` as asked (`last_fraction`) or as it came out.
    pub val_fraction: f64,
    /// `last_fraction` (the val split is the end of the stream) or `first_tokens` (its start).
    #[serde(default = "last_fraction")]
    pub val_split: String,
    /// The bound on the text the BPE was trained on, when it was trained here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_sample_mb: Option<u64>,
    /// The bytes of text it was trained on (the first ones of the input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_sample_bytes: Option<u64>,
    pub created_at: String,
    pub stacklab_version: String,
}

/// A prepared dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub info: DatasetInfo,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset> {
        let p = dir.join(DATASET_FILE);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let info = toml::from_str(&text)
            .with_context(|| format!("{}: not a stacklab dataset summary", p.display()))?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            info,
        })
    }
    pub fn train_glob(&self) -> String {
        self.dir.join("train_*.bin").display().to_string()
    }
    pub fn val_glob(&self) -> String {
        self.dir.join("val_*.bin").display().to_string()
    }
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(&self.info.tokenizer)
    }
}
