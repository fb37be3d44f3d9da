//! Token data: the modded-nanogpt shard format, the seed's batch loader, tokenizing text
//! into shards, downloading FineWeb shards, and the corpus shipped with stacklab.

pub mod command;
pub mod download;
pub mod embedded;
pub mod loader;
pub mod on_disk;
pub mod overlap;
pub mod prefetch;
pub mod prepare;
pub mod pyrandom;
pub mod shard;
pub mod train_stream;

pub use loader::{LoaderState, ShardLoader, TokenSpan};
pub use shard::{Shard, SHARD_MAGIC, SHARD_VERSION};
pub use train_stream::{ordered_shards, TrainStream, TrainStreamState};

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Expands a shard glob into its files, sorted by name (the seed's order).
pub fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>> {
    let paths = glob::glob(pattern).with_context(|| format!("`{pattern}` is not a valid glob"))?;
    let mut files = Vec::new();
    for p in paths {
        let p = p.with_context(|| format!("cannot read a path matched by `{pattern}`"))?;
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no shard files match `{pattern}`");
    }
    Ok(files)
}

/// Where a run's train and val tokens come from, resolved to shard globs.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub train: String,
    pub val: String,
    /// The tokenizer that made the shards, when known (the embedded corpus has one).
    pub tokenizer: Option<PathBuf>,
    pub description: String,
}

impl DataSource {
    pub fn from_config(cfg: &crate::config::DataConfig) -> Result<DataSource> {
        if cfg.embedded {
            let ds = embedded::ensure_prepared()?;
            Ok(DataSource {
                train: ds.train_glob(),
                val: ds.val_glob(),
                tokenizer: Some(ds.tokenizer_path()),
                description: format!("embedded corpus ({})", ds.dir.display()),
            })
        } else {
            Ok(DataSource {
                train: cfg.train.clone(),
                val: cfg.val.clone(),
                tokenizer: None,
                description: format!("train {} / val {}", cfg.train, cfg.val),
            })
        }
    }
}
