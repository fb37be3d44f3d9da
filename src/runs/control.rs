//! Stopping, killing and removing runs: what the lab's keys and `stacklab stop` / `rm` do.
//!
//! Stop is SIGTERM (the training finishes its step, checkpoints and ends `stopped`), kill is
//! SIGKILL (it ends at once and shows as `lost`, resumable from its last checkpoint), both
//! to the process its status names, checked by pid and start time so a reused pid is never
//! signalled.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::launch;
use super::lock;
use super::process;
use super::queue::Queue;
use super::registry::{Phase, RunEntry};
use super::retention::Lineages;

/// Signals a run's training process, which must be running (the process holding the run's
/// lock, else the one its status names).
pub fn signal_run(e: &RunEntry, signal: i32) -> Result<()> {
    match (e.training(), e.phase()) {
        (Some((pid, start_time)), Phase::Running) => {
            process::signal_training(pid, start_time, signal)
        }
        (_, phase) => bail!("{} is {}, not running", e.name, phase.as_str()),
    }
}

/// A run named on the command line: a name under the checkpoint dir `root`, or a path to
/// a run folder (its parent is then the checkpoint dir). Returns (checkpoint dir, name).
pub fn locate(root: &Path, run: &str) -> Result<(PathBuf, String)> {
    let trimmed = run.trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." || trimmed == ".." {
        bail!("`{run}` is not a run name");
    }
    if !trimmed.contains('/') {
        return Ok((root.to_path_buf(), trimmed.to_string()));
    }
    let p = Path::new(trimmed);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("`{run}` is not a run folder"))?;
    let parent = p
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent.to_path_buf(), name))
}

/// The run folder `name` under `root`, read as the lab reads it (only that one).
fn entry(root: &Path, name: &str) -> Result<RunEntry> {
    let path = root.join(name);
    if !path.is_dir() {
        bail!("no run `{name}` in {}", root.display());
    }
    let mut e = RunEntry::new(&path);
    e.refresh();
    Ok(e)
}

/// What happened to a run `stop` was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Stopped {
    pub name: String,
    pub pid: u32,
    pub killed: bool,
    /// The device it trains on, when known.
    pub device: Option<String>,
}

/// The lab's stop (SIGTERM) or kill (SIGKILL) of a run under `root`, with a clear error
/// when it is not running. A training started from the queue that has not written its
/// status yet is signalled by the pid and start time recorded at its start.
pub fn stop_run(root: &Path, name: &str, kill: bool) -> Result<Stopped> {
    let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
    let done = |pid, device: Option<&str>| Stopped {
        name: name.to_string(),
        pid,
        killed: kill,
        device: device.map(String::from),
    };
    if let Some(s) = launch::starting(root).into_iter().find(|s| s.name == name) {
        process::signal_training(s.pid, s.start_time, signal)?;
        return Ok(done(s.pid, Some(&s.device)));
    }
    if Queue::new(root).contains(name) {
        bail!("{name} is queued, not running: nothing to stop (the lab's Runs pane takes it off the queue)");
    }
    let e = entry(root, name)?;
    match (e.training(), e.phase()) {
        (Some((pid, _)), Phase::Running) => {
            signal_run(&e, signal)?;
            Ok(done(pid, e.device()))
        }
        (_, Phase::Lost) => bail!(
            "{name} is lost, not running: its process is gone without a final status (resume it with `stacklab train --resume {}`)",
            e.path.display()
        ),
        (_, Phase::Corrupt) => bail!(
            "{name} is not a readable run ({}), so not running: {}",
            e.path.display(),
            e.problem.clone().unwrap_or_default()
        ),
        (_, phase) => bail!("{name} is {}, not running: nothing to stop", phase.as_str()),
    }
}

/// Whether a process is gone within `timeout` (a kill is asynchronous).
pub fn wait_gone(pid: u32, timeout: std::time::Duration) -> bool {
    let t0 = std::time::Instant::now();
    while process::is_alive_as(pid, None) {
        if t0.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// What `rm` removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Removed {
    pub path: PathBuf,
    pub bytes: u64,
    /// Other runs whose lineage names a checkpoint of the removed run.
    pub named_by: Vec<String>,
}

/// Removes a finished run's folder (and the lab's output file of it): refused for a run
/// that is running, starting or queued, and for a folder that is not a readable run. The
/// run's lock is held while it is removed, so no resume starts on it meanwhile.
pub fn remove_run(root: &Path, name: &str) -> Result<Removed> {
    super::run_dir::check_run_name(name)?;
    if launch::starting(root).iter().any(|s| s.name == name) {
        bail!("{name} is starting: stop it first (`stacklab stop {name}`); not removed");
    }
    if Queue::new(root).contains(name) {
        bail!("{name} is queued: take it off the queue first (the lab's Runs pane); not removed");
    }
    let e = entry(root, name)?;
    match e.phase() {
        Phase::Running | Phase::Starting => {
            let pid = e.training().map(|(pid, _)| pid).unwrap_or(0);
            bail!("{name} is running (pid {pid}): stop it first (`stacklab stop {name}`); not removed")
        }
        Phase::Corrupt => bail!(
            "{name} is not a readable run ({}: {}); stacklab leaves it alone: remove it by hand if it is yours",
            e.path.display(),
            e.problem.clone().unwrap_or_default()
        ),
        _ => {}
    }
    let prefix = format!("{name}/");
    let named_by: Vec<String> = Lineages::scan(root)
        .named
        .into_iter()
        .filter(|(ck, _)| ck.starts_with(&prefix))
        .map(|(ck, why)| format!("{ck}: {}", why.join("; ")))
        .collect();
    let path = e.path.clone();
    let _lock = lock::acquire(&path, lock::RM, None).map_err(|err| {
        match err.downcast_ref::<lock::Held>() {
            Some(held) => anyhow::anyhow!("{held}: not removed"),
            None => err,
        }
    })?;
    let bytes = super::disk::remove_dir_safely(&path)?;
    let _ = std::fs::remove_file(launch::output_log(root, name));
    Ok(Removed {
        path,
        bytes,
        named_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_named_or_given_by_path() {
        let root = Path::new("/data/checkpoints");
        assert_eq!(
            locate(root, "model1").unwrap(),
            (root.to_path_buf(), "model1".to_string())
        );
        assert_eq!(
            locate(root, "other/ckpts/model2/").unwrap(),
            (PathBuf::from("other/ckpts"), "model2".to_string())
        );
        assert_eq!(
            locate(root, "./m").unwrap(),
            (PathBuf::from("."), "m".to_string())
        );
        assert!(locate(root, "").is_err());
        assert!(locate(root, "..").is_err());
    }
}
