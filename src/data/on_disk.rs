//! Which datasets are on this machine and how many tokens each holds (for `doctor`): the
//! embedded corpus, and every folder of shards under `./data` and the data dir (a prepared
//! dataset with its `dataset.toml`, or downloaded shards such as `data/fineweb10B`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::download::KNOWN;
use super::prepare::{Dataset, DATASET_FILE};
use super::shard::read_header;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatasetSummary {
    pub name: String,
    pub dir: String,
    pub present: bool,
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub train_shards: usize,
    pub val_shards: usize,
    /// Anything amiss (invalid shards, unfinished downloads), or how to get it.
    pub note: Option<String>,
}

impl DatasetSummary {
    pub fn describe(&self) -> String {
        let mut s = if self.present {
            format!(
                "{} train / {} val tokens ({} + {} shards) in {}",
                self.train_tokens, self.val_tokens, self.train_shards, self.val_shards, self.dir
            )
        } else {
            format!("not present ({})", self.dir)
        };
        if let Some(n) = &self.note {
            s.push_str(&format!("; {n}"));
        }
        s
    }
}

/// Counts the tokens of a folder of shards from their headers: `train` in files whose name
/// holds `train`, `val` in those holding `val`.
fn count_shards(name: &str, dir: &Path) -> Option<DatasetSummary> {
    let mut s = DatasetSummary {
        name: name.to_string(),
        dir: dir.display().to_string(),
        present: false,
        train_tokens: 0,
        val_tokens: 0,
        train_shards: 0,
        val_shards: 0,
        note: None,
    };
    let (mut bad, mut partial) = (Vec::new(), 0);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        let file = p.file_name()?.to_string_lossy().into_owned();
        if file.ends_with(".bin.part") {
            partial += 1;
            continue;
        }
        if !file.ends_with(".bin") {
            continue;
        }
        let is_val = file.contains("val");
        if !is_val && !file.contains("train") {
            continue;
        }
        match read_header(&p) {
            Ok(n) if is_val => {
                s.val_tokens += n as u64;
                s.val_shards += 1;
            }
            Ok(n) => {
                s.train_tokens += n as u64;
                s.train_shards += 1;
            }
            Err(_) => bad.push(file),
        }
    }
    s.present = s.train_shards + s.val_shards > 0;
    let mut notes = Vec::new();
    if !bad.is_empty() {
        notes.push(format!(
            "{} invalid shard(s): {}",
            bad.len(),
            bad.join(", ")
        ));
    }
    if partial > 0 {
        notes.push(format!(
            "{partial} unfinished download(s) (.part; run `stacklab data download` again)"
        ));
    }
    s.note = (!notes.is_empty()).then(|| notes.join("; "));
    (s.present || s.note.is_some()).then_some(s)
}

/// Every dataset found, the embedded corpus first, and the known downloadable sets at their
/// default place even when missing.
pub fn datasets() -> Vec<DatasetSummary> {
    let mut out = Vec::new();
    let emb = super::embedded::dir();
    match super::embedded::prepared() {
        Some(ds) => out.push(from_dataset("embedded", &ds)),
        None => out.push(DatasetSummary {
            name: "embedded".into(),
            dir: emb.display().to_string(),
            present: false,
            train_tokens: 0,
            val_tokens: 0,
            train_shards: 0,
            val_shards: 0,
            note: Some("prepared on first use".into()),
        }),
    }
    let mut roots = vec![PathBuf::from("data"), crate::paths::data_dir()];
    roots.dedup();
    let mut seen = vec![emb];
    for root in roots {
        let Ok(rd) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            let name = d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if seen.contains(&d) || name.starts_with('.') {
                continue;
            }
            seen.push(d.clone());
            if d.join(DATASET_FILE).is_file() {
                if let Ok(ds) = Dataset::open(&d) {
                    out.push(from_dataset(&name, &ds));
                    continue;
                }
            }
            if let Some(s) = count_shards(&name, &d) {
                out.push(s);
            }
        }
    }
    for k in KNOWN {
        if !out.iter().any(|s| s.name == k.name) {
            out.push(DatasetSummary {
                name: k.name.into(),
                dir: k.default_out.into(),
                present: false,
                train_tokens: 0,
                val_tokens: 0,
                train_shards: 0,
                val_shards: 0,
                note: Some(format!("`stacklab data download {}` fetches it", k.name)),
            });
        }
    }
    out
}

fn from_dataset(name: &str, ds: &Dataset) -> DatasetSummary {
    DatasetSummary {
        name: name.into(),
        dir: ds.dir.display().to_string(),
        present: true,
        train_tokens: ds.info.train_tokens as u64,
        val_tokens: ds.info.val_tokens as u64,
        train_shards: ds.info.train_shards.len(),
        val_shards: ds.info.val_shards.len(),
        note: Some(format!("prepared, vocabulary {}", ds.info.vocab_size)),
    }
}
