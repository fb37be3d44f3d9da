//! The runs under a checkpoint dir, as the lab and scripts see them.
//!
//! [`Registry`] watches the folder: each refresh looks at file sizes and modification times
//! and reads only what changed (new metric lines from where it stopped, a rewritten status),
//! so twenty runs with hundreds of checkpoints cost a few `stat` calls a tick. It only reads:
//! a corrupt or half-written folder is listed with the reason and never modified. A run's
//! size on disk is summed when its folder changes (each checkpoint once: they never change
//! after they are renamed into place), plus the files that grow (metrics, log, status).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::disk;
use super::lock::{self, Holder, LOCK_FILE};
use super::run_dir::{
    MetricsRow, RunDir, RunState, RunStatus, CONFIG_FILE, LOG_FILE, METRICS_FILE, STATUS_FILE,
};

mod phase;

pub use phase::{phase_of, Phase};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Stamp {
    /// A file replaced by a rename is another inode.
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
    /// Bytes on disk.
    bytes: u64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
        bytes: disk::allocated(&m),
    })
}

/// One folder under the checkpoint dir.
#[derive(Debug, Clone, Default)]
pub struct RunEntry {
    pub name: String,
    pub path: PathBuf,
    pub status: Option<RunStatus>,
    /// Why the folder is not (entirely) readable as a run.
    pub problem: Option<String>,
    /// `config.toml`, loosely parsed (for showing key values).
    pub config: Option<toml::Table>,
    pub metrics: Vec<MetricsRow>,
    pub checkpoints: usize,
    /// Bytes the folder takes on disk.
    pub size_bytes: u64,
    /// When the status was last written.
    pub updated: Option<SystemTime>,
    metrics_offset: u64,
    /// Bytes of everything but the growing files, as of the folder's last change.
    fixed_bytes: u64,
    /// Sizes of sub-folders by name and inode (a checkpoint never changes once in place).
    folder_bytes: HashMap<(String, u64), u64>,
    log_stamp: Option<Stamp>,
    status_stamp: Option<Stamp>,
    metrics_stamp: Option<Stamp>,
    config_stamp: Option<Stamp>,
    dir_stamp: Option<Stamp>,
    phase: Option<Phase>,
    /// The live training holding the run's lock (whatever the status says).
    pub holder: Option<Holder>,
    lock_stamp: Option<Stamp>,
    /// The training the lock file names, until it is seen dead.
    lock_named: Option<Holder>,
}

impl RunEntry {
    pub fn new(path: &Path) -> RunEntry {
        RunEntry {
            name: RunDir::new(path).name(),
            path: path.to_path_buf(),
            ..Default::default()
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.unwrap_or(Phase::Corrupt)
    }

    pub fn step(&self) -> i64 {
        let s = self.status.as_ref().map(|s| s.step).unwrap_or(0);
        s.max(self.metrics.last().map(|r| r.step).unwrap_or(0))
    }

    pub fn total_steps(&self) -> i64 {
        self.status
            .as_ref()
            .map(|s| s.total_steps)
            .or_else(|| self.config_value("schedule.steps")?.parse().ok())
            .unwrap_or(0)
    }

    /// The training process of a running run, (pid, start time): the one holding its lock,
    /// else the one its status names.
    pub fn training(&self) -> Option<(u32, Option<u64>)> {
        if let Some(h) = &self.holder {
            return Some((h.pid, h.start_time));
        }
        self.status
            .as_ref()
            .filter(|st| phase_of(st) == Phase::Running)
            .map(|st| (st.pid, st.start_time))
    }

    pub fn last_train_loss(&self) -> Option<f64> {
        self.metrics.iter().rev().find_map(|r| r.train_loss)
    }

    pub fn last_val_loss(&self) -> Option<f64> {
        self.metrics.iter().rev().find_map(|r| r.val_loss)
    }

    pub fn tokens_per_s(&self) -> Option<f64> {
        self.metrics.iter().rev().find_map(|r| r.tokens_per_s)
    }

    pub fn device(&self) -> Option<&str> {
        self.holder
            .as_ref()
            .and_then(|h| h.device.as_deref())
            .or_else(|| self.status.as_ref().and_then(|s| s.device.as_deref()))
    }

    /// A config value by dotted key (`model.n_layer`), shown as TOML writes it.
    pub fn config_value(&self, key: &str) -> Option<String> {
        let mut v: &toml::Value = self.config.as_ref()?.get(key.split('.').next()?)?;
        for part in key.split('.').skip(1) {
            v = v.get(part)?;
        }
        Some(match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// Re-reads what changed on disk; returns whether anything the lab shows changed.
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        let status_path = self.path.join(STATUS_FILE);
        let config_path = self.path.join(CONFIG_FILE);
        let metrics_path = self.path.join(METRICS_FILE);

        let s = stamp(&status_path);
        if s != self.status_stamp {
            self.status_stamp = s;
            changed = true;
            self.updated = s.and_then(|s| s.modified);
            self.status = RunDir::new(&self.path).read_status().ok();
        }
        let c = stamp(&config_path);
        if c != self.config_stamp {
            self.config_stamp = c;
            changed = true;
            self.config = std::fs::read_to_string(&config_path)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok());
        }
        let m = stamp(&metrics_path);
        if m != self.metrics_stamp {
            changed = true;
            let shrunk = m.is_none_or(|m| m.len < self.metrics_offset)
                || self
                    .metrics_stamp
                    .is_some_and(|old| m.is_some_and(|m| m.ino != old.ino || m.len == old.len));
            if shrunk {
                // Truncated (a resumed run rewrites what came after its checkpoint).
                self.metrics.clear();
                self.metrics_offset = 0;
            }
            self.metrics_stamp = m;
            self.read_new_metrics(&metrics_path);
        }
        let d = stamp(&self.path);
        if d != self.dir_stamp {
            self.dir_stamp = d;
            changed = true;
            self.checkpoints = RunDir::new(&self.path).checkpoints().len();
            self.fixed_bytes = self.sum_fixed_bytes();
        }
        let l = stamp(&self.path.join(LOG_FILE));
        changed |= l != self.log_stamp;
        self.log_stamp = l;
        let size = self.fixed_bytes
            + [s, m, l, d]
                .iter()
                .map(|x| x.map(|x| x.bytes).unwrap_or(0))
                .sum::<u64>();
        if size != self.size_bytes {
            self.size_bytes = size;
            changed = true;
        }
        changed |= self.judge(c.is_some(), s.is_some());
        changed
    }

    /// Bytes of the folder's entries but the folder itself, status, metrics and log (which
    /// change without the folder changing). Checkpoint folders are summed once; hidden
    /// ones (being written or removed) every time.
    fn sum_fixed_bytes(&mut self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        let mut seen = HashMap::new();
        for e in std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if [STATUS_FILE, METRICS_FILE, LOG_FILE].contains(&name.as_str()) {
                continue;
            }
            let Ok(m) = e.metadata() else {
                continue;
            };
            if !m.is_dir() {
                total += disk::allocated(&m);
                continue;
            }
            let key = (name, m.ino());
            let bytes = match self.folder_bytes.get(&key) {
                Some(b) => *b,
                None => disk::disk_size(&e.path()),
            };
            if !key.0.starts_with('.') {
                seen.insert(key, bytes);
            }
            total += bytes;
        }
        self.folder_bytes = seen;
        total
    }

    fn read_new_metrics(&mut self, path: &Path) {
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.metrics_offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_err() {
            return;
        }
        // Only whole lines: a line being written is read on the next refresh.
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        for line in bytes[..end].split(|&b| b == b'\n') {
            if let Ok(row) = serde_json::from_slice::<MetricsRow>(line) {
                self.metrics.push(row);
            }
        }
        self.metrics_offset += end as u64 + 1;
    }
}

/// Every folder under a checkpoint dir (hidden ones excepted), by name.
pub struct Registry {
    pub root: PathBuf,
    pub runs: BTreeMap<String, RunEntry>,
}

impl Registry {
    pub fn new(root: &Path) -> Registry {
        Registry {
            root: root.to_path_buf(),
            runs: BTreeMap::new(),
        }
    }

    /// Picks up new, changed and removed runs; returns whether anything changed.
    pub fn refresh(&mut self) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        let mut changed = false;
        for e in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            seen.insert(name.clone());
            let entry = self.runs.entry(name).or_insert_with(|| {
                changed = true;
                RunEntry::new(&e.path())
            });
            changed |= entry.refresh();
        }
        let before = self.runs.len();
        self.runs.retain(|n, _| seen.contains(n));
        changed | (self.runs.len() != before)
    }

    pub fn get(&self, name: &str) -> Option<&RunEntry> {
        self.runs.get(name)
    }
}

/// A run in one line, for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub name: String,
    pub path: PathBuf,
    /// A [`Phase`] name: running, done, failed, stopped, lost, corrupt.
    pub state: String,
    pub step: i64,
    pub total_steps: i64,
    pub message: String,
    pub last_val_loss: Option<f64>,
    pub checkpoints: usize,
}

/// Every run folder directly under `root`, sorted by name.
pub fn list_runs(root: &Path) -> Vec<RunSummary> {
    let mut reg = Registry::new(root);
    reg.refresh();
    reg.runs.values().map(summary).collect()
}

pub fn summary(e: &RunEntry) -> RunSummary {
    RunSummary {
        name: e.name.clone(),
        path: e.path.clone(),
        state: e.phase().as_str().to_string(),
        step: e.step(),
        total_steps: e.total_steps(),
        message: e
            .problem
            .clone()
            .or_else(|| e.status.as_ref().map(|s| s.message.clone()))
            .unwrap_or_default(),
        last_val_loss: e.last_val_loss(),
        checkpoints: e.checkpoints,
    }
}

#[cfg(test)]
mod tests;
