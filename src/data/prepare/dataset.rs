//! A prepared dataset folder and the summary (`dataset.toml`) written beside its shards.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
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

/// Refuses to let `--force` replace `dir` unless it holds a stacklab dataset and nothing
/// else: its summary must read as one, and every entry must be a file the summary names
/// (the summary, the tokenizer, the shards). Nothing is changed either way.
pub(super) fn check_replaceable(dir: &Path) -> Result<()> {
    let summary = dir.join(DATASET_FILE);
    if !summary.is_file() {
        bail!(
            "--out {}: the folder is not empty and holds no stacklab dataset (no {DATASET_FILE}); --force replaces only a folder `data prepare` wrote, so nothing was changed: give a new or empty folder",
            dir.display()
        );
    }
    let ds = Dataset::open(dir).with_context(|| {
        format!(
            "--out {}: --force replaces only a stacklab dataset, so nothing was changed",
            dir.display()
        )
    })?;
    let info = &ds.info;
    let ours: Vec<&str> = [DATASET_FILE, info.tokenizer.as_str()]
        .into_iter()
        .chain(info.train_shards.iter().map(String::as_str))
        .chain(info.val_shards.iter().map(String::as_str))
        .collect();
    let mut others: Vec<String> = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !(is_file && ours.contains(&name.as_str())) {
            others.push(name);
        }
    }
    if !others.is_empty() {
        others.sort();
        let shown = others
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        let more = match others.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        bail!(
            "--out {}: holds {shown}{more} besides its dataset; --force replaces only what `data prepare` wrote, so nothing was changed: move them away first",
            dir.display()
        );
    }
    Ok(())
}
