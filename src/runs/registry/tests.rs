//! Unit tests of the registry: phases and corrupt folders (read, never modified), many runs
//! read once, and metrics read incrementally and again after a truncation.

use super::*;
use std::io::Write;

fn status(state: RunState, pid: u32, start_time: Option<u64>) -> RunStatus {
    RunStatus {
        state,
        pid,
        step: 3,
        total_steps: 10,
        message: "m".into(),
        updated_at: "now".into(),
        start_time,
        device: Some("cpu".into()),
        world_size: None,
    }
}

fn make_run(root: &Path, name: &str, st: &RunStatus) -> RunDir {
    let run = RunDir::new(root.join(name));
    std::fs::create_dir_all(&run.path).unwrap();
    std::fs::write(run.config_path(), "seed = 1\n[model]\nn_layer = 2\n").unwrap();
    run.write_status(st).unwrap();
    run
}

#[test]
fn runs_corrupt_folders_and_liveness() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let me = std::process::id();
    let t = crate::runs::process::own_start_time();
    make_run(root, "alive", &status(RunState::Running, me, t));
    // The pid is alive but started at another time: someone else's process now.
    make_run(
        root,
        "reused-pid",
        &status(RunState::Running, me, t.map(|t| t + 7)),
    );
    make_run(root, "done", &status(RunState::Done, 0, None));
    // Lost ones: an unreadable status, no status beside a config; corrupt: a stray folder.
    // Hidden folders are skipped.
    let bad = make_run(root, "garbage", &status(RunState::Done, 0, None));
    std::fs::write(bad.status_path(), "{\"state\": \"runn").unwrap();
    std::fs::create_dir_all(root.join("half")).unwrap();
    std::fs::write(root.join("half/config.toml"), "seed = 1\n").unwrap();
    std::fs::create_dir_all(root.join("stray")).unwrap();
    std::fs::create_dir_all(root.join(".queue")).unwrap();
    std::fs::write(root.join("file.txt"), "x").unwrap();
    let before: Vec<_> = walk(root);

    let mut reg = Registry::new(root);
    assert!(reg.refresh());
    let phases: Vec<(&str, Phase)> = reg
        .runs
        .values()
        .map(|e| (e.name.as_str(), e.phase()))
        .collect();
    assert_eq!(
        phases,
        [
            ("alive", Phase::Running),
            ("done", Phase::Done),
            ("garbage", Phase::Lost),
            ("half", Phase::Lost),
            ("reused-pid", Phase::Lost),
            ("stray", Phase::Corrupt),
        ]
    );
    assert!(reg
        .get("garbage")
        .unwrap()
        .problem
        .as_ref()
        .unwrap()
        .contains("status.json is unreadable"));
    assert!(reg
        .get("half")
        .unwrap()
        .problem
        .as_ref()
        .unwrap()
        .contains("no status.json"));
    assert_eq!(
        reg.get("alive")
            .unwrap()
            .config_value("model.n_layer")
            .as_deref(),
        Some("2")
    );
    assert!(!reg.refresh(), "nothing changed");
    assert_eq!(walk(root), before, "reading never modifies a folder");
    let listed = list_runs(root);
    assert_eq!(listed.len(), 6);
    assert_eq!(listed[4].state, "lost");
    assert_eq!(listed[2].state, "lost");
}

/// A run whose lock a training holds is running, whatever its status says (a resume
/// started elsewhere that has not written its status yet), and its holder is the pid shown.
#[test]
fn a_held_lock_shows_a_stopped_run_as_running() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let run = make_run(root, "r", &status(RunState::Stopped, 1, None));
    let mut reg = Registry::new(root);
    reg.refresh();
    assert_eq!(reg.get("r").unwrap().phase(), Phase::Stopped);
    let lock =
        crate::runs::lock::acquire(&run.path, crate::runs::lock::TRAIN, Some("cuda:1")).unwrap();
    assert!(reg.refresh());
    let e = reg.get("r").unwrap();
    assert_eq!(e.phase(), Phase::Running);
    assert_eq!(e.training().map(|t| t.0), Some(std::process::id()));
    assert_eq!(e.device(), Some("cuda:1"));
    assert!(!e.phase().resumable());
    let err = crate::runs::control::remove_run(root, "r").unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("running (pid {})", std::process::id())),
        "{err}"
    );
    drop(lock);
    assert!(reg.refresh());
    assert_eq!(reg.get("r").unwrap().phase(), Phase::Stopped);
    // Removing takes the lock itself; a lost run (unreadable status) is removable.
    std::fs::write(run.status_path(), "{\"state\": \"runn").unwrap();
    reg.refresh();
    assert_eq!(reg.get("r").unwrap().phase(), Phase::Lost);
    crate::runs::control::remove_run(root, "r").unwrap();
    assert!(!run.path.exists());
}

fn walk(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn twenty_runs_with_two_hundred_checkpoints_are_read_once() {
    let dir = tempfile::tempdir().unwrap();
    for r in 0..20 {
        let run = make_run(
            dir.path(),
            &format!("run{r:02}"),
            &status(RunState::Done, 0, None),
        );
        for s in 0..200 {
            let ck = run.path.join(format!("step_{:06}", s * 10));
            std::fs::create_dir_all(&ck).unwrap();
            std::fs::write(ck.join("meta.toml"), "").unwrap();
            run.append_metrics(&MetricsRow {
                step: s,
                train_loss: Some(1.0),
                ..Default::default()
            })
            .unwrap();
        }
    }
    let mut reg = Registry::new(dir.path());
    assert!(reg.refresh());
    assert!(reg
        .runs
        .values()
        .all(|e| e.checkpoints == 200 && e.metrics.len() == 200));
    // Later ticks see unchanged sizes and times, and read nothing again.
    assert!(!reg.refresh());
    let run = RunDir::new(dir.path().join("run07"));
    run.append_metrics(&MetricsRow {
        step: 200,
        val_loss: Some(0.5),
        ..Default::default()
    })
    .unwrap();
    assert!(reg.refresh());
    assert_eq!(reg.get("run07").unwrap().metrics.len(), 201);
    assert_eq!(reg.get("run07").unwrap().last_val_loss(), Some(0.5));
}

#[test]
fn metrics_are_read_incrementally_and_reread_after_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let run = make_run(dir.path(), "r", &status(RunState::Done, 0, None));
    let mut reg = Registry::new(dir.path());
    reg.refresh();
    assert!(reg.get("r").unwrap().metrics.is_empty());
    for s in 0..3 {
        run.append_metrics(&MetricsRow {
            step: s,
            train_loss: Some(s as f64),
            ..Default::default()
        })
        .unwrap();
    }
    // Half a line is left for the next refresh.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(run.metrics_path())
        .unwrap();
    f.write_all(b"{\"step\":3,\"tokens_seen\":0,").unwrap();
    assert!(reg.refresh());
    assert_eq!(reg.get("r").unwrap().metrics.len(), 3);
    f.write_all(b"\"elapsed_s\":1.0,\"val_loss\":2.5}\n")
        .unwrap();
    assert!(reg.refresh());
    let e = reg.get("r").unwrap();
    assert_eq!(e.metrics.len(), 4);
    assert_eq!(e.last_val_loss(), Some(2.5));
    assert_eq!(e.last_train_loss(), Some(2.0));
    run.truncate_metrics(1).unwrap();
    assert!(reg.refresh());
    assert_eq!(reg.get("r").unwrap().metrics.len(), 2);
}
