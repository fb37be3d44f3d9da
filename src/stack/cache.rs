//! A model's own val loss, cached in the data dir so the next stack of the same models only
//! runs the stack. The key is everything the number depends on: the model's identity (its
//! weights' SHA-256 and its resolved block list with scales, heads and norms, see
//! [`super::identity`]), the data files (names, sizes, modification times), tokens and
//! sequence length (which decide the tokens scored), the batch size (which decides how they
//! are grouped, so the float rounding) and the device kind (TF32 on CUDA rounds differently).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One val file as the cache knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub path: String,
    pub bytes: u64,
    pub mtime_ns: i128,
}

impl DataFile {
    pub fn of(path: &Path) -> Result<DataFile> {
        let md =
            std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
        let mtime_ns = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(DataFile {
            path: path.display().to_string(),
            bytes: md.len(),
            mtime_ns,
        })
    }
}

/// What a cached loss depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossKey {
    /// [`super::identity::model_id`]: weights, outer norms, and every block's scale, heads
    /// and boundary norm.
    pub model_id: String,
    pub data: Vec<DataFile>,
    pub tokens: i64,
    pub seq_len: i64,
    /// Sequences per forward: not which tokens are scored, but how their losses round.
    pub batch: i64,
    pub device: String,
}

impl LossKey {
    fn file_name(&self) -> String {
        let text = serde_json::to_string(self).expect("a key serialises");
        let hex = crate::hash::sha256_hex(text.as_bytes());
        // `v2`: keys before the model identity named weights only; they never match.
        format!("v2-{hex}.json")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    key: LossKey,
    val_loss: f64,
    tokens_scored: i64,
    created_at: String,
}

/// The cache: one small JSON file per key, written atomically.
pub struct LossCache {
    dir: PathBuf,
}

impl LossCache {
    /// The cache in the data dir.
    pub fn in_data_dir() -> LossCache {
        LossCache::at(crate::paths::data_dir().join("loss-cache"))
    }

    pub fn at(dir: PathBuf) -> LossCache {
        LossCache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached loss and the tokens it was scored on, if this exact key was stored.
    pub fn get(&self, key: &LossKey) -> Option<(f64, i64)> {
        let text = std::fs::read_to_string(self.dir.join(key.file_name())).ok()?;
        let e: Entry = serde_json::from_str(&text).ok()?;
        (e.key == *key && e.val_loss.is_finite()).then_some((e.val_loss, e.tokens_scored))
    }

    pub fn put(&self, key: &LossKey, val_loss: f64, tokens_scored: i64) -> Result<()> {
        let e = Entry {
            key: key.clone(),
            val_loss,
            tokens_scored,
            created_at: chrono::Utc::now().to_rfc3339(),
        };
        crate::paths::write_atomic(
            &self.dir.join(key.file_name()),
            serde_json::to_string_pretty(&e)?.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_found_only_under_its_exact_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LossCache::at(dir.path().to_path_buf());
        let key = LossKey {
            model_id: "ab".into(),
            data: vec![DataFile {
                path: "/v.bin".into(),
                bytes: 10,
                mtime_ns: 5,
            }],
            tokens: 64,
            seq_len: 32,
            batch: 4,
            device: "cpu".into(),
        };
        assert_eq!(cache.get(&key), None);
        cache.put(&key, 4.25, 64).unwrap();
        assert_eq!(cache.get(&key), Some((4.25, 64)));
        let mut other = key.clone();
        other.data[0].mtime_ns = 6;
        assert_eq!(cache.get(&other), None);
        let mut other = key.clone();
        other.model_id = "cd".into();
        assert_eq!(cache.get(&other), None);
        let mut other = key.clone();
        other.batch = 3;
        assert_eq!(cache.get(&other), None);
    }
}
