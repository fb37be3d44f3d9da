//! Starting queued trainings, from the lab or from a training that just ended.
//!
//! Under the queue's lock, a request is chosen (`queue::ready`), claimed (`Queue::claim`)
//! and started detached (`jobs::spawn::start_detached`: its own session, stdin from /dev/null,
//! output to `.lab/NAME.out`); only then is it removed from the queue. Until its training
//! writes a status or takes its run's lock, it is recorded as starting in
//! `.queue/starting/NAME.json` (pid and start time), so every lab and every ending training
//! counts it against its device's slots.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::lock;
use super::process;
use super::queue::{self, Capacity, Queue, QueuedRun, Request, ANY_DEVICE};
use super::registry::{phase_of, Phase};
use super::run_dir::RunDir;
use crate::jobs::spawn::{self, Io, Spec};

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

/// Whether the run's own status or lock names this process (then they tell its state).
fn reported(root: &Path, s: &Starting) -> bool {
    let run = root.join(&s.name);
    RunDir::new(&run)
        .read_status()
        .is_ok_and(|st| st.pid == s.pid)
        || lock::read_holder(&run).is_some_and(|h| h.pid == s.pid)
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

/// One more training on each device of `label` (`cuda:2,cuda:3` for a training in two
/// processes).
fn count(busy: &mut HashMap<String, usize>, label: &str) {
    for d in crate::device::slots::devices_of(label) {
        *busy.entry(d.to_string()).or_insert(0) += 1;
    }
}

/// Whether a queued request may take a slot `label`'s training freed: it names one of its
/// devices, or any.
fn wants(q: &QueuedRun, label: &str) -> bool {
    q.device == ANY_DEVICE
        || crate::device::slots::devices_of(&q.device)
            .any(|d| crate::device::slots::devices_of(label).any(|l| l == d))
}

/// Trainings per device: running runs (by their status, the process checked, or by the
/// training holding their lock) and ones starting.
pub fn busy(root: &Path) -> HashMap<String, usize> {
    let mut busy = HashMap::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let device = match RunDir::new(e.path()).read_status() {
            Ok(st) if phase_of(&st) == Phase::Running => Some(st.device),
            Ok(st) if st.world_size > Some(1) && ranks_linger(&e.path()) => Some(st.device),
            _ => lock::training(&e.path()).map(|h| h.device),
        };
        if let Some(d) = device {
            count(&mut busy, d.as_deref().unwrap_or("cpu"));
        }
    }
    for s in starting(root) {
        count(&mut busy, &s.device);
    }
    busy
}

/// Whether processes of a training that no longer runs are still alive: its ranks outliving
/// a killed `train --nproc` launcher (they follow it within moments). Their devices stay
/// taken until they are gone, so the next training does not meet their GPU memory.
pub fn ranks_linger(run: &Path) -> bool {
    lock::outlived(run).is_some() || !super::process::rank_pids(run).is_empty()
}

/// Waits at most `timeout` for the lingering ranks ([`ranks_linger`]) of the runs on any of
/// `device`'s devices to be gone.
fn wait_for_ranks(root: &Path, device: &str, timeout: std::time::Duration) {
    let mine: Vec<&str> = crate::device::slots::devices_of(device).collect();
    let lingering = || {
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let on_mine = RunDir::new(e.path()).read_status().is_ok_and(|st| {
                    let d = st.device.unwrap_or_else(|| "cpu".into());
                    let hit = crate::device::slots::devices_of(&d).any(|x| mine.contains(&x));
                    // Only a training in several processes has ranks to outlive its launcher.
                    hit && st.world_size > Some(1)
                });
                on_mine && ranks_linger(&e.path())
            })
    };
    let t0 = std::time::Instant::now();
    while t0.elapsed() < timeout && lingering() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Starts a request taken from the queue: `exe train ...` detached (its own session, output
/// appended to `.lab/NAME.out`), recorded as starting.
pub fn spawn_request(root: &Path, exe: &Path, q: &QueuedRun) -> Result<Child> {
    let req = q.train_request(root);
    let child = spawn::start_detached(
        &Spec {
            program: exe,
            args: &req.to_args(),
            env: &req.env(),
        },
        &Io::Logged {
            log: output_log(root, &q.name),
        },
    )?;
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

/// Takes and starts every queued request that has a free slot (`cap.max_per_device`
/// trainings per device; a request for any device goes to the least busy of `cap.devices`,
/// one in several processes to as many free GPUs), under the queue's lock: what another lab
/// or an ending training started counts against the same slots. A resume of a run that a
/// training holds waits in the queue until it is free.
pub fn start_ready(root: &Path, exe: &Path, cap: &Capacity) -> Vec<(QueuedRun, Result<Child>)> {
    let queue = Queue::new(root);
    if !queue.dir.is_dir() {
        return Vec::new();
    }
    let _lock = match queue.lock() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot start queued runs: {e:#}");
            return Vec::new();
        }
    };
    for name in queue.recover() {
        tracing::warn!(run = %name, "a start was cut short: the request is back in the queue");
    }
    let waiting: Vec<QueuedRun> = queue
        .list()
        .into_iter()
        .filter(|q| q.request != Request::Resume || lock::training(&root.join(&q.name)).is_none())
        .collect();
    if waiting.is_empty() {
        return Vec::new();
    }
    clear_stale(root);
    let mut started = Vec::new();
    for q in queue::ready(&waiting, &busy(root), cap) {
        let Some(claim) = queue.claim(&q) else {
            continue;
        };
        let child = spawn_request(root, exe, &q);
        claim.done();
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

/// After a training on `device` (a label: `cuda:1,cuda:3` for one in two processes) ended
/// or was killed, starts what the queue holds that now fits under the checkpoint dir `root`:
/// when a request names one of its devices, or any device, every request that fits (a
/// request in several processes may need GPUs other trainings freed before), saying what it started on stderr (a
/// closed stderr is ignored).
pub fn start_next(root: &Path, device: &str) {
    let root = root.to_path_buf();
    let queue = Queue::new(&root);
    if queue.list().iter().all(|q| !wants(q, device)) && queue.claimed().is_empty() {
        return;
    }
    let say = |msg: String| {
        let _ = writeln!(std::io::stderr(), "{msg}");
    };
    // The ranks of the training that ended (torchrun's, or a killed launcher's) may outlive
    // it by moments; their GPUs count as taken until they are gone.
    wait_for_ranks(&root, device, std::time::Duration::from_secs(10));
    let cap = match crate::config::lab::LabConfig::load(&crate::paths::config_dir()) {
        Ok(c) => Capacity::of(&c),
        Err(e) => {
            say(format!(
                "warning: {e:#}; starting queued runs one at a time"
            ));
            Capacity {
                devices: crate::device::slots::devices_of(device)
                    .map(String::from)
                    .collect(),
                max_per_device: 1,
            }
        }
    };
    let exe = match spawn::stacklab_exe() {
        Ok(p) => p,
        Err(e) => {
            say(format!("warning: cannot start queued runs: {e:#}"));
            return;
        }
    };
    for (q, child) in start_ready(&root, &exe, &cap) {
        match child {
            Ok(c) => say(format!(
                "started queued run {} (pid {}; output in {})",
                q.name,
                c.id(),
                output_log(&root, &q.name).display()
            )),
            Err(e) => say(format!(
                "warning: cannot start queued run {}: {e:#}",
                q.name
            )),
        }
    }
}

#[cfg(test)]
mod tests;
