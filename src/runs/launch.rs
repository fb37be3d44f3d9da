//! Starting queued trainings, from the lab or from a training that just ended.
//!
//! A request is taken from the queue (`queue::ready`, `Queue::take`) and started detached
//! (`process::spawn_detached`: its own session, stdin from /dev/null, output to
//! `.lab/NAME.out`). Until its training writes a status, it is recorded as starting in
//! `.queue/starting/NAME.json` (pid and start time), so every lab and every ending training
//! counts it against its device's slots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::process;
use super::queue::{self, Queue, QueuedRun};
use super::registry::{phase_of, Phase};
use super::run_dir::RunDir;

/// Where trainings started from the queue write their stdout and stderr (beside `.queue/`).
pub const LAB_DIR: &str = ".lab";
/// Under `.queue/`: trainings started that have not written their status yet.
pub const STARTING_DIR: &str = "starting";

/// The file a training started from the queue writes its output to.
pub fn output_log(root: &Path, name: &str) -> PathBuf {
    root.join(LAB_DIR).join(format!("{name}.out"))
}

/// A training started from the queue, named by pid and start time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Starting {
    pub name: String,
    pub device: String,
    pub pid: u32,
    pub start_time: Option<u64>,
}

fn starting_dir(root: &Path) -> PathBuf {
    Queue::new(root).dir.join(STARTING_DIR)
}

fn read_markers(root: &Path) -> Vec<(PathBuf, Starting)> {
    std::fs::read_dir(starting_dir(root))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let s = serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
            Some((e.path(), s))
        })
        .collect()
}

/// Whether the run's own status names this process (then the status tells its state).
fn reported(root: &Path, s: &Starting) -> bool {
    RunDir::new(root.join(&s.name))
        .read_status()
        .is_ok_and(|st| st.pid == s.pid)
}

/// Trainings started from the queue whose process is alive and has not written its status.
pub fn starting(root: &Path) -> Vec<Starting> {
    read_markers(root)
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| process::is_alive_as(s.pid, s.start_time) && !reported(root, s))
        .collect()
}

/// Removes the records of starts that have reported or died.
fn clear_stale(root: &Path) {
    for (file, s) in read_markers(root) {
        if !process::is_alive_as(s.pid, s.start_time) || reported(root, &s) {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Trainings per device: running runs (by their status, the process checked) and ones
/// starting.
pub fn busy(root: &Path) -> HashMap<String, usize> {
    let mut busy = HashMap::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if let Ok(st) = RunDir::new(e.path()).read_status() {
            if phase_of(&st) == Phase::Running {
                let d = st.device.unwrap_or_else(|| "cpu".into());
                *busy.entry(d).or_insert(0) += 1;
            }
        }
    }
    for s in starting(root) {
        *busy.entry(s.device).or_insert(0) += 1;
    }
    busy
}

/// Starts a request taken from the queue: `exe train ...` detached, recorded as starting.
pub fn spawn_request(root: &Path, exe: &Path, q: &QueuedRun) -> Result<Child> {
    let args = q.train_args(root);
    let child = process::spawn_detached(exe, &args, &output_log(root, &q.name))?;
    let marker = Starting {
        name: q.name.clone(),
        device: q.device.clone(),
        pid: child.id(),
        start_time: process::proc_info(child.id()).map(|p| p.start_time),
    };
    let file = starting_dir(root).join(format!("{}.json", q.name));
    if let Err(e) =
        crate::paths::write_atomic_unsynced(&file, serde_json::to_string(&marker)?.as_bytes())
    {
        tracing::warn!(run = %q.name, "cannot record the start: {e:#}");
    }
    Ok(child)
}

/// Takes and starts every queued request (of `device`, or of any) that has a free slot
/// (`max_per_device` trainings per device). Stops at a request another lab or training
/// took first: it counts against the same slots.
pub fn start_ready(
    root: &Path,
    exe: &Path,
    max_per_device: usize,
    device: Option<&str>,
) -> Vec<(QueuedRun, Result<Child>)> {
    let queue = Queue::new(root);
    let waiting: Vec<QueuedRun> = queue
        .list()
        .into_iter()
        .filter(|q| device.is_none_or(|d| q.device == d))
        .collect();
    if waiting.is_empty() {
        return Vec::new();
    }
    clear_stale(root);
    let mut started = Vec::new();
    for q in queue::ready(&waiting, &busy(root), max_per_device) {
        if !queue.take(&q) {
            break;
        }
        let child = spawn_request(root, exe, &q);
        started.push((q, child));
    }
    started
}

/// What a training does as it ends (done, stopped or failed): its device's slot is free,
/// so the next queued request for that device starts, lab open or not. The limit is the
/// lab's `max_concurrent_runs` (`lab.toml` in the config dir).
pub fn after_training(device: &str) {
    start_next(&crate::paths::checkpoint_dir(), device);
}

/// Starts the queued requests for `device` that have a free slot under the checkpoint dir
/// `root` (after a training ended or was killed), saying what it started on stderr.
pub fn start_next(root: &Path, device: &str) {
    let root = root.to_path_buf();
    if Queue::new(&root).list().iter().all(|q| q.device != device) {
        return;
    }
    let max = match crate::tui::config::LabConfig::load(&crate::paths::config_dir()) {
        Ok(c) => c.max_concurrent_runs,
        Err(e) => {
            eprintln!("warning: {e:#}; starting queued runs one at a time");
            1
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("warning: cannot start queued runs: cannot find this program: {e}");
            return;
        }
    };
    for (q, child) in start_ready(&root, &exe, max, Some(device)) {
        match child {
            Ok(c) => eprintln!(
                "started queued run {} (pid {}; output in {})",
                q.name,
                c.id(),
                output_log(&root, &q.name).display()
            ),
            Err(e) => eprintln!("warning: cannot start queued run {}: {e:#}", q.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::queue::Request;
    use crate::runs::run_dir::{RunDir, RunState, RunStatus};

    #[test]
    fn a_start_counts_until_its_training_reports_and_the_queue_respects_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let queue = Queue::new(root);
        for n in ["a", "b"] {
            queue
                .push(&QueuedRun::new(n, "cpu", Request::Resume))
                .unwrap();
        }
        // A "training" that sleeps: it never writes a status.
        let exe = dir.path().join("fake-stacklab");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut started = start_ready(root, &exe, 1, Some("cpu"));
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].0.name, "a");
        let mut child = started.pop().unwrap().1.unwrap();
        assert_eq!(starting(root).len(), 1);
        assert_eq!(busy(root).get("cpu"), Some(&1));
        // Still starting: b waits, whoever looks.
        assert!(start_ready(root, &exe, 1, None).is_empty());
        assert_eq!(queue.list().len(), 1);
        // Once a's training writes its own status, the status tells.
        let run = RunDir::new(root.join("a"));
        std::fs::create_dir_all(&run.path).unwrap();
        run.write_status(&RunStatus {
            state: RunState::Done,
            pid: child.id(),
            step: 1,
            total_steps: 1,
            message: String::new(),
            updated_at: String::new(),
            start_time: None,
            device: Some("cpu".into()),
        })
        .unwrap();
        assert!(starting(root).is_empty());
        let _ = child.kill();
        let _ = child.wait();
        let mut next = start_ready(root, &exe, 1, Some("cpu"));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0.name, "b");
        let mut b = next.pop().unwrap().1.unwrap();
        assert!(queue.list().is_empty());
        let _ = b.kill();
        let _ = b.wait();
        // a's record was cleared when b started; b's goes once it is gone.
        let markers: Vec<String> = read_markers(root)
            .into_iter()
            .map(|(_, s)| s.name)
            .collect();
        assert_eq!(markers, ["b"]);
        assert!(starting(root).is_empty());
    }
}
