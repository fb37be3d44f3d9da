//! Tests of starting queued trainings: the slots they take and hand on.

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
