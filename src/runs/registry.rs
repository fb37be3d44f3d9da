//! The runs under a checkpoint dir, summarised for listings (the lab, scripts).

use std::path::{Path, PathBuf};

use super::run_dir::{RunDir, RunState};

#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub name: String,
    pub path: PathBuf,
    /// `running`, `done`, `failed`, `stopped`, or `crashed` (running, but its process is gone).
    pub state: String,
    pub step: i64,
    pub total_steps: i64,
    pub message: String,
    pub last_val_loss: Option<f64>,
    pub checkpoints: usize,
}

/// Every run folder directly under `root`, sorted by name.
pub fn list_runs(root: &Path) -> Vec<RunSummary> {
    let mut out: Vec<RunSummary> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| RunDir::is_run_dir(p))
        .filter_map(|p| summarise(&p))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn summarise(path: &Path) -> Option<RunSummary> {
    let run = RunDir::new(path);
    let status = run.read_status().ok()?;
    let state = if status.state == RunState::Running && !status.process_alive() {
        "crashed".to_string()
    } else {
        status.state.as_str().to_string()
    };
    let last_val_loss = run
        .read_metrics()
        .ok()?
        .iter()
        .rev()
        .find_map(|r| r.val_loss);
    Some(RunSummary {
        name: run.name(),
        path: path.to_path_buf(),
        state,
        step: status.step,
        total_steps: status.total_steps,
        message: status.message,
        last_val_loss,
        checkpoints: run.checkpoints().len(),
    })
}
