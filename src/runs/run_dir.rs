//! A run directory:
//!
//! ```text
//! <checkpoints>/<run>/
//!   config.toml     the resolved config the run trains with
//!   status.json     running / done / failed / stopped, pid, step, total steps, last message
//!   metrics.jsonl   one JSON object per step (and the step-0 validation)
//!   train.log       what the run printed
//!   step_000100/    checkpoints (see `checkpoint.rs`)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::paths::write_atomic;

pub const CONFIG_FILE: &str = "config.toml";
pub const STATUS_FILE: &str = "status.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOG_FILE: &str = "train.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Done,
    Failed,
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub state: RunState,
    pub pid: u32,
    pub step: i64,
    pub total_steps: i64,
    pub message: String,
    pub updated_at: String,
    /// The training process's start time (clock ticks after boot, `/proc/PID/stat` field 22):
    /// with the pid it names the process, so a reused pid is not taken for the training.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_time: Option<u64>,
    /// The device the run trains on (`cpu`, `cuda:0`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device: Option<String>,
    /// The processes of a data-parallel training (`train --nproc`, torchrun, srun).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub world_size: Option<usize>,
}

impl RunStatus {
    /// Whether the process that wrote this status is still alive on this machine: the pid
    /// exists, is not a zombie and, when the status records it, started at the same time.
    pub fn process_alive(&self) -> bool {
        super::process::is_alive_as(self.pid, self.start_time)
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    pub step: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub train_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latent_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr_factor: Option<f64>,
    pub tokens_seen: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens_per_s: Option<f64>,
    pub elapsed_s: f64,
}

/// Refuses a run name that is not usable as one folder under the checkpoint dir (the same
/// rule as every folder name: [`crate::paths::check_folder_name`]).
pub fn check_run_name(name: &str) -> Result<()> {
    crate::paths::check_folder_name("run name", name)
}

pub struct RunDir {
    pub path: PathBuf,
    /// The log this process writes: `train.log`, or `train.rank<R>.log` for the other
    /// processes of a data-parallel run.
    log_file: String,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir {
            path: path.into(),
            log_file: LOG_FILE.to_string(),
        }
    }

    /// The run as process `rank` of a data-parallel training sees it: rank 0 writes the
    /// run's files; every other rank only its own log, `train.rank<R>.log`.
    pub fn for_rank(path: impl Into<PathBuf>, rank: usize) -> RunDir {
        let mut r = RunDir::new(path);
        if rank != 0 {
            r.log_file = format!("train.rank{rank}.log");
        }
        r
    }

    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }
    pub fn status_path(&self) -> PathBuf {
        self.path.join(STATUS_FILE)
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }
    pub fn log_path(&self) -> PathBuf {
        self.path.join(&self.log_file)
    }

    pub fn is_run_dir(path: &Path) -> bool {
        path.join(CONFIG_FILE).is_file() && path.join(STATUS_FILE).is_file()
    }

    pub fn read_status(&self) -> Result<RunStatus> {
        let p = self.status_path();
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a stacklab run status", p.display()))
    }

    /// Writes the status atomically; a final state (done, failed, stopped) is also synced to
    /// disk, so a crash or power cut right after the run ends cannot take it back.
    pub fn write_status(&self, status: &RunStatus) -> Result<()> {
        let text = serde_json::to_string_pretty(status)?;
        if status.state == RunState::Running {
            crate::paths::write_atomic_unsynced(&self.status_path(), text.as_bytes())
        } else {
            write_atomic(&self.status_path(), text.as_bytes())
        }
    }

    pub fn append_metrics(&self, row: &MetricsRow) -> Result<()> {
        let p = self.metrics_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        // One write per line, so a reader never sees half a row from this writer.
        let line = format!("{}\n", serde_json::to_string(row)?);
        f.write_all(line.as_bytes())
            .with_context(|| format!("cannot append to {}", p.display()))
    }

    /// All rows of `metrics.jsonl`; a torn last line (a crash mid-write) is ignored.
    pub fn read_metrics(&self) -> Result<Vec<MetricsRow>> {
        let p = self.metrics_path();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<MetricsRow>(l).ok())
            .collect())
    }

    /// Keeps only the rows up to `step` (a resumed run rewrites what came after its checkpoint).
    pub fn truncate_metrics(&self, step: i64) -> Result<()> {
        let p = self.metrics_path();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<MetricsRow>(l)
                    .map(|r| r.step <= step)
                    .unwrap_or(false)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&p, kept.as_bytes())
    }

    /// Appends a timestamped line to `train.log`.
    pub fn log(&self, msg: &str) {
        let line = format!(
            "{} {msg}\n",
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
        {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// Valid checkpoints of the run, oldest first.
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        super::checkpoint::list_checkpoints(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_append_read_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        for s in 0..5 {
            run.append_metrics(&MetricsRow {
                step: s,
                train_loss: Some(1.0 / (s + 1) as f64),
                tokens_seen: s * 10,
                ..Default::default()
            })
            .unwrap();
        }
        // A torn line from a crash is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(run.metrics_path())
            .unwrap()
            .write_all(b"{\"step\": 5, \"train_lo")
            .unwrap();
        assert_eq!(run.read_metrics().unwrap().len(), 5);
        run.truncate_metrics(2).unwrap();
        let rows = run.read_metrics().unwrap();
        assert_eq!(
            rows.iter().map(|r| r.step).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        let line = std::fs::read_to_string(run.metrics_path()).unwrap();
        assert!(
            line.starts_with("{\"step\":0,\"train_loss\":1.0,\"tokens_seen\":0,"),
            "{line}"
        );
    }
}
