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
            Ok(st) if ranks_linger(&e.path()) => Some(st.device),
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
                    hit
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
mod tests {
    use super::*;
    use crate::runs::run_dir::{RunDir, RunState, RunStatus};

    fn cpu_cap(max_per_device: usize) -> Capacity {
        Capacity {
            devices: vec!["cpu".into()],
            max_per_device,
        }
    }

    #[test]
    fn a_start_counts_until_its_training_reports_and_the_queue_respects_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let queue = Queue::new(root);
        // b may run on any of the lab's devices.
        for (n, device) in [("a", "cpu"), ("b", ANY_DEVICE)] {
            queue
                .push(&QueuedRun::new(n, device, Request::Resume))
                .unwrap();
        }
        // A "training" that sleeps: it never writes a status.
        let exe = dir.path().join("fake-stacklab");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut started = start_ready(root, &exe, &cpu_cap(1));
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].0.name, "a");
        let mut child = started.pop().unwrap().1.unwrap();
        assert_eq!(starting(root).len(), 1);
        assert_eq!(busy(root).get("cpu"), Some(&1));
        // Still starting: b waits, whoever looks.
        assert!(start_ready(root, &exe, &cpu_cap(1)).is_empty());
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
            world_size: None,
        })
        .unwrap();
        assert!(starting(root).is_empty());
        let _ = child.kill();
        let _ = child.wait();
        let mut next = start_ready(root, &exe, &cpu_cap(1));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0.name, "b");
        // It took the freed cpu slot, and is counted there while it starts.
        assert_eq!(next[0].0.device, "cpu");
        assert_eq!(
            next[0].0.train_args(root).last().map(String::as_str),
            Some("cpu")
        );
        assert_eq!(busy(root).get("cpu"), Some(&1));
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

    fn sleeper(dir: &Path) -> PathBuf {
        let exe = dir.join("fake-stacklab");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// Two labs (or a lab and an ending training) deciding at the same moment start one
    /// training between them when one slot is free.
    #[test]
    fn two_takers_deciding_at_once_never_exceed_the_limit() {
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_path_buf();
            let queue = Queue::new(&root);
            for n in ["a", "b", "c", "d"] {
                queue
                    .push(&QueuedRun::new(n, "cpu", Request::Resume))
                    .unwrap();
            }
            let exe = sleeper(&root);
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let (root, exe, barrier) = (root.clone(), exe.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        start_ready(&root, &exe, &cpu_cap(1))
                    })
                })
                .collect();
            let mut children = Vec::new();
            for t in takers {
                for (_, child) in t.join().unwrap() {
                    children.push(child.unwrap());
                }
            }
            let n = children.len();
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
            assert_eq!(n, 1, "round {round}: {n} trainings started for one slot");
            assert_eq!(queue.list().len(), 3);
        }
    }

    /// A resume of a run that a training holds (started elsewhere, its status still saying
    /// stopped) waits in the queue.
    #[test]
    fn a_resume_of_a_held_run_waits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let queue = Queue::new(root);
        queue
            .push(&QueuedRun::new("held", "cpu", Request::Resume))
            .unwrap();
        let run = root.join("held");
        std::fs::create_dir_all(&run).unwrap();
        let lock = lock::acquire(&run, lock::TRAIN, Some("cuda:0")).unwrap();
        let exe = sleeper(root);
        assert!(start_ready(root, &exe, &cpu_cap(2)).is_empty());
        assert_eq!(queue.list().len(), 1);
        assert_eq!(busy(root).get("cuda:0"), Some(&1), "the holder counts");
        drop(lock);
        let mut started = start_ready(root, &exe, &cpu_cap(2));
        assert_eq!(started.len(), 1);
        let mut c = started.pop().unwrap().1.unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// The status of a training in two processes on cuda:1 and cuda:2.
    fn on_two_gpus(state: RunState, pid: u32) -> RunStatus {
        RunStatus {
            state,
            pid,
            step: 1,
            total_steps: 9,
            message: String::new(),
            updated_at: String::new(),
            start_time: None,
            device: Some("cuda:1,cuda:2".into()),
            world_size: Some(2),
        }
    }

    /// A killed launcher's ranks outlive it by moments: while rank 0 still holds the run's
    /// lock, or a recorded rank lives, the run's GPUs stay taken; then they are free.
    #[test]
    fn the_gpus_of_ranks_that_outlive_their_launcher_stay_taken_until_they_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let run = RunDir::new(root.join("killed"));
        std::fs::create_dir_all(&run.path).unwrap();
        run.write_status(&on_two_gpus(RunState::Running, 0))
            .unwrap();
        let taken = || {
            let b = busy(root);
            (b.get("cuda:1").copied(), b.get("cuda:2").copied())
        };
        // The launcher (pid 0 here) is gone: the run is lost and nothing holds its GPUs.
        assert_eq!(taken(), (None, None));
        // Rank 0 still holds the lock that names the dead launcher.
        let lock = lock::acquire(&run.path, lock::TRAIN, Some("cuda:1,cuda:2")).unwrap();
        let me = std::process::id();
        let dead =
            format!(r#"{{"pid":{me},"start_time":1,"purpose":"train","device":"cuda:1,cuda:2"}}"#);
        std::fs::write(run.path.join(lock::LOCK_FILE), dead).unwrap();
        assert!(
            lock::training(&run.path).is_none(),
            "its named holder is dead"
        );
        assert!(ranks_linger(&run.path));
        assert_eq!(taken(), (Some(1), Some(1)));
        drop(lock);
        assert_eq!(taken(), (None, None));
        // A recorded rank that lives keeps them taken too, until it ends.
        let mut rank = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let rec = format!(r#"{{"pid":{},"start_time":null}}"#, rank.id());
        std::fs::write(run.path.join(".rank1.json"), rec).unwrap();
        assert_eq!(taken(), (Some(1), Some(1)));
        let t0 = std::time::Instant::now();
        let waiter = {
            let root = root.to_path_buf();
            std::thread::spawn(move || {
                wait_for_ranks(&root, "cuda:2", std::time::Duration::from_secs(20));
                t0.elapsed()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        rank.kill().unwrap();
        rank.wait().unwrap();
        let waited = waiter.join().unwrap();
        assert!(
            waited >= std::time::Duration::from_millis(300)
                && waited < std::time::Duration::from_secs(20),
            "{waited:?}"
        );
        assert_eq!(taken(), (None, None));
    }

    /// A training in two processes counts against both its GPUs; when it ends, a queued
    /// two-process request for any device takes the two GPUs it freed, its child trains on
    /// just those, and a request waiting for GPUs two trainings free starts when the second
    /// ends.
    #[test]
    fn a_training_on_two_gpus_holds_both_and_hands_both_on() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut sleeping = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let run = RunDir::new(root.join("wide"));
        std::fs::create_dir_all(&run.path).unwrap();
        let status = on_two_gpus;
        run.write_status(&status(RunState::Running, sleeping.id()))
            .unwrap();
        // Another training holds cuda:0 throughout.
        let mut other_proc = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let other = RunDir::new(root.join("other"));
        std::fs::create_dir_all(&other.path).unwrap();
        other
            .write_status(&RunStatus {
                device: Some("cuda:0".into()),
                world_size: None,
                ..status(RunState::Running, other_proc.id())
            })
            .unwrap();
        let counts = busy(root);
        assert_eq!(
            (counts.get("cuda:1"), counts.get("cuda:2")),
            (Some(&1), Some(&1))
        );
        assert_eq!(counts.get("cuda:0"), Some(&1));

        let queue = Queue::new(root);
        queue
            .push(&QueuedRun {
                nproc: Some(2),
                ..QueuedRun::new("next", ANY_DEVICE, Request::Resume)
            })
            .unwrap();
        let seen = root.join("seen");
        let exe = root.join("fake-stacklab");
        std::fs::write(
            &exe,
            format!(
                "#!/bin/sh\necho \"$*\" > {}\nexec sleep 30\n",
                seen.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cap = Capacity {
            devices: ["cuda:0", "cuda:1", "cuda:2"].map(String::from).to_vec(),
            max_per_device: 1,
        };
        // While both run, no GPU is free: the two-process request waits.
        assert!(start_ready(root, &exe, &cap).is_empty());
        let _ = sleeping.kill();
        let _ = sleeping.wait();
        run.write_status(&status(RunState::Done, sleeping.id()))
            .unwrap();
        let mut started = start_ready(root, &exe, &cap);
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].0.device, "cuda:1,cuda:2");
        let counts = busy(root);
        assert_eq!(
            (counts.get("cuda:1"), counts.get("cuda:2")),
            (Some(&1), Some(&1))
        );
        let mut child = started.pop().unwrap().1.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let line = loop {
            match std::fs::read_to_string(&seen) {
                Ok(l) if l.ends_with('\n') => break l,
                _ if std::time::Instant::now() > deadline => panic!("the child never started"),
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let _ = other_proc.kill();
        let _ = other_proc.wait();
        assert!(line.contains("--device cuda:1,cuda:2"), "{line}");
        assert!(line.contains("--nproc 2"), "{line}");
    }
}
