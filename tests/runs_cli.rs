//! `stacklab runs`, `stop`, `rm` and `gc` on real tiny trainings; checkpoint retention
//! during training; a queued run started by the training before it ending, with no lab.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{bin, micro_config, read_json, shared_data_dir, Lab};
use stacklab::runs::disk::disk_size;
use stacklab::runs::queue::{Queue, QueuedRun, Request};

/// A background training the test owns: killed if the test fails before it ends.
struct Training(Child);

impl Drop for Training {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, timeout_s: u64, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(timeout_s),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(run: &Path) -> serde_json::Value {
    std::fs::read_to_string(run.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Starts a long training in the background and waits until its status says it runs.
fn start_long(lab: &Lab, name: &str) -> Training {
    let child = lab
        .cmd(&[
            "train",
            "--config",
            "micro.toml",
            "--name",
            name,
            "--device",
            "cpu",
            "--set",
            "schedule.steps=100000",
            "--set",
            "checkpoint_every=0",
            "--set",
            "eval.val_every=0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as u64;
    let run = lab.checkpoints().join(name);
    wait_for(&format!("{name} to run"), 300, || {
        let st = status(&run);
        st["state"] == "running" && st["pid"] == pid
    });
    Training(child)
}

fn runs_json(lab: &Lab) -> Vec<serde_json::Value> {
    let out: serde_json::Value = serde_json::from_str(&lab.ok(&["runs", "--json"])).unwrap();
    assert_eq!(out["schema"], "stacklab.runs/1");
    out["runs"].as_array().unwrap().clone()
}

fn run_of<'a>(runs: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    runs.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {runs:?}"))
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn checkpoint_steps(run: &Path) -> Vec<String> {
    stacklab::runs::checkpoint::list_checkpoints(run)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn runs_stop_and_rm_on_done_stopped_running_lost_queued_and_corrupt_runs() {
    let lab = Lab::new();
    let root = lab.checkpoints();
    lab.write(
        "micro.toml",
        &micro_config(6, "").replace("checkpoint_every = 5", "checkpoint_every = 3"),
    );
    lab.ok(&[
        "train",
        "--config",
        "micro.toml",
        "--name",
        "done",
        "--device",
        "cpu",
    ]);
    lab.ok(&[
        "train",
        "--config",
        "micro.toml",
        "--name",
        "stopped",
        "--stop-after",
        "3",
        "--device",
        "cpu",
    ]);
    let mut live = start_long(&lab, "live");
    let mut ghost = start_long(&lab, "ghost");
    std::fs::create_dir_all(root.join("junk")).unwrap();
    // No config beside an unreadable status: not a run (with a config it would be lost).
    std::fs::write(root.join("junk/status.json"), "{\"state\": \"runn").unwrap();
    let junk = snapshot(&root.join("junk"));
    // On a device no training here uses, so nothing starts it.
    let req = Request::New {
        config: lab.path("micro.toml").display().to_string(),
        sets: vec![],
    };
    Queue::new(&root)
        .push(&QueuedRun::new("waiting", "cuda:7", req))
        .unwrap();

    // stop --kill: SIGKILL, checked by pid and start time; the run is then lost.
    let ghost_pid = ghost.0.id();
    let out = lab.ok(&["stop", "ghost", "--kill"]);
    assert!(
        out.contains(&format!("killed ghost (SIGKILL to pid {ghost_pid})")),
        "{out}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(ghost.0.wait().unwrap().signal(), Some(libc::SIGKILL));

    let runs = runs_json(&lab);
    let names: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("done", "done"),
            ("ghost", "lost"),
            ("junk", "corrupt"),
            ("live", "running"),
            ("stopped", "stopped"),
            ("waiting", "queued"),
        ]
    );
    let d = run_of(&runs, "done");
    assert_eq!(
        (d["step"].as_i64(), d["total_steps"].as_i64()),
        (Some(6), Some(6))
    );
    for k in ["train_loss", "val_loss", "tokens_per_s", "age_s"] {
        assert!(
            d[k].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
            "{k}: {d}"
        );
    }
    assert_eq!(d["checkpoints"], 2);
    assert_eq!(
        d["size_bytes"].as_u64(),
        Some(disk_size(&root.join("done")))
    );
    assert!(
        d["size_bytes"].as_u64().unwrap() > 100_000,
        "two checkpoints: {d}"
    );
    assert_eq!(d["device"], "cpu");
    assert!(d["pid"].is_null() && d["problem"].is_null());
    let s = run_of(&runs, "stopped");
    assert_eq!(
        (s["step"].as_i64(), s["checkpoints"].as_i64()),
        (Some(3), Some(1))
    );
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("stopped by --stop-after"),
        "{s}"
    );
    assert_eq!(
        run_of(&runs, "live")["pid"].as_u64(),
        Some(live.0.id() as u64)
    );
    assert!(run_of(&runs, "ghost")["pid"].is_null());
    let w = run_of(&runs, "waiting");
    assert_eq!(
        (w["device"].as_str(), w["size_bytes"].as_u64()),
        (Some("cuda:7"), Some(0))
    );
    let j = run_of(&runs, "junk");
    assert!(
        j["problem"]
            .as_str()
            .unwrap()
            .contains("not a stacklab run status"),
        "{j}"
    );

    let table = lab.ok(&["runs"]);
    for want in [
        "run", "state", "step", "train", "val", "tok/s", "age", "size",
    ] {
        assert!(table.lines().nth(1).unwrap().contains(want), "{table}");
    }
    assert!(
        table.contains("6/6") && table.contains("6 run(s)"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("junk")
            && l.contains("corrupt")
            && l.contains("not a stacklab run status")),
        "{table}"
    );

    // Not running: a clear message and a failure.
    for (run, want) in [
        ("done", "done is done, not running"),
        ("ghost", "ghost is lost, not running"),
        ("waiting", "waiting is queued, not running"),
        ("junk", "junk is not a readable run"),
        ("nope", "no run `nope` in"),
    ] {
        let err = lab.fails(&["stop", run]);
        assert!(err.contains(want), "stop {run}: {err}");
    }

    // rm refuses a running, a queued and an unreadable run; removes a finished one.
    let err = lab.fails(&["rm", "live"]);
    assert!(
        err.contains(&format!("live is running (pid {})", live.0.id())),
        "{err}"
    );
    assert!(root.join("live/status.json").is_file());
    assert!(lab.fails(&["rm", "waiting"]).contains("waiting is queued"));
    assert!(lab.fails(&["rm", "junk"]).contains("not a readable run"));
    let done_bytes = disk_size(&root.join("done"));
    let out = lab.ok(&["rm", "done"]);
    assert!(
        out.contains("removed done")
            && out.contains(&stacklab::runs::disk::format_size(done_bytes)),
        "{out}"
    );
    assert!(!root.join("done").exists());
    let left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".queue")
        .collect();
    assert!(left.is_empty(), "nothing hidden left behind: {left:?}");

    // stop: SIGTERM, and the training checkpoints and ends stopped.
    let out = lab.ok(&["stop", "live"]);
    assert!(
        out.contains(&format!("stopping live (SIGTERM to pid {})", live.0.id())),
        "{out}"
    );
    assert_eq!(live.0.wait().unwrap().code(), Some(130));
    let st = status(&root.join("live"));
    assert_eq!(st["state"], "stopped");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("stopped by a signal"),
        "{st}"
    );
    assert_eq!(checkpoint_steps(&root.join("live")).len(), 1);
    assert_eq!(
        snapshot(&root.join("junk")),
        junk,
        "a corrupt folder is never modified"
    );
}

#[test]
fn retention_during_training_keeps_the_last_every_kth_and_lineage_and_gc_frees_what_it_says() {
    let lab = Lab::new();
    let root = lab.checkpoints();
    let parent = root.join("parent");
    let fast = |steps| micro_config(steps, "").replace("val_every = 5", "val_every = 0");
    lab.write(
        "parent.toml",
        &format!(
            "checkpoint_keep_last = 1\ncheckpoint_keep_every = 15\n{}",
            fast(30)
        ),
    );
    lab.write(
        "child.toml",
        &format!("from_model = \"parent/step_000010\"\n{}", fast(5)),
    );
    lab.ok(&[
        "train",
        "--config",
        "parent.toml",
        "--name",
        "parent",
        "--stop-after",
        "10",
        "--device",
        "cpu",
    ]);
    assert_eq!(
        checkpoint_steps(&parent),
        ["step_000010"],
        "keep_last 1 removed step 5"
    );
    lab.ok(&[
        "train",
        "--config",
        "child.toml",
        "--name",
        "child",
        "--device",
        "cpu",
    ]);

    // Killed while writing step 25: the checkpoints before it are all there.
    let out = lab
        .cmd(&[
            "train",
            "--resume",
            parent.to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .env("STACKLAB_FAULT_KILL_IN_CHECKPOINT", "25")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("retention: kept")
            && stderr.contains("parent/step_000010 because run child's config (from_model = \"parent/step_000010\"); run child's from_model lineage (parent/step_000010) names it"),
        "{stderr}"
    );
    assert_eq!(
        checkpoint_steps(&parent),
        ["step_000010", "step_000015", "step_000020"],
        "10 named by child's lineage, 15 a multiple of 15, 20 the last complete one"
    );
    let out = lab.run(&[
        "train",
        "--resume",
        parent.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("retention: kept"),
        "said again by the new process:\n{stderr}"
    );
    assert_eq!(
        checkpoint_steps(&parent),
        ["step_000010", "step_000015", "step_000030"]
    );
    let log = std::fs::read_to_string(parent.join("train.log")).unwrap();
    for step in ["step_000005", "step_000020", "step_000025"] {
        assert!(
            log.lines().any(|l| l
                .contains("retention (keeps the last 1 and every step divisible by 15): removed")
                && l.contains(step)),
            "{step}:\n{log}"
        );
    }

    // gc: a dry run changes nothing and says what gc then frees, to the byte.
    let leftover = parent.join(format!(".step_000099.tmp-{}", u32::MAX - 7));
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("model.safetensors"), vec![1u8; 50_000]).unwrap();
    let before = snapshot(&root);
    let args = ["gc", "--keep-last", "1", "--keep-every", "0"];
    let dry = lab.ok(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(snapshot(&root), before, "--dry-run changes nothing");
    assert!(
        dry.contains("parent: keeps the last 1: would remove step_000015"),
        "{dry}"
    );
    assert!(
        dry.contains("parent: kept step_000010: run child's config"),
        "{dry}"
    );
    assert!(
        dry.contains(&format!("would remove {}", leftover.display())),
        "{dry}"
    );
    let bytes = |text: &str| -> u64 {
        let (_, rest) = text.rsplit_once(" (").unwrap();
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    let said = bytes(dry.lines().last().unwrap());
    assert!(said > 50_000, "{dry}");
    let du = disk_size(&root);
    let out = lab.ok(&args);
    assert_eq!(bytes(out.lines().last().unwrap()), said, "{out}");
    assert!(out.lines().last().unwrap().starts_with("freed "), "{out}");
    assert_eq!(du - disk_size(&root), said, "gc frees what it said");
    assert_eq!(checkpoint_steps(&parent), ["step_000010", "step_000030"]);
    assert!(!leftover.exists());
    assert_eq!(checkpoint_steps(&root.join("child")), ["step_000005"]);
    let again = lab.ok(&["gc", "--keep-last", "1", "--keep-every", "0"]);
    assert!(again.contains("nothing to remove"), "{again}");
    let err = lab.fails(&["gc", "--keep-last", "0", "--keep-every", "5"]);
    assert!(err.contains("--keep-every 5 with --keep-last 0"), "{err}");
    // child keeps every checkpoint: --keep-every alone cannot apply to it.
    let out = lab.ok(&["gc", "--keep-every", "5", "child"]);
    assert!(
        out.contains("child: left alone: --keep-every 5") && out.contains("nothing to remove"),
        "{out}"
    );
}

#[test]
fn a_queued_run_starts_when_the_training_before_it_ends_without_a_lab() {
    let lab = Lab::new();
    let root = lab.checkpoints();
    let config_dir = lab.path("config");
    lab.write("config/lab.toml", "max_concurrent_runs = 1\n");
    let cfg = lab.write(
        "config/micro.toml",
        &micro_config(6, "").replace("val_every = 5", "val_every = 0"),
    );
    // The program the queue starts: stacklab in this test's folders.
    let exe = lab.write(
        "stacklab.sh",
        &format!(
            "#!/bin/sh\nexport STACKLAB_DATA_DIR='{}' STACKLAB_CHECKPOINT_DIR='{}' STACKLAB_CONFIG_DIR='{}'\nexec '{}' \"$@\"\n",
            shared_data_dir().display(),
            root.display(),
            config_dir.display(),
            bin()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let queue = Queue::new(&root);
    for name in ["first", "second"] {
        let req = Request::New {
            config: cfg.display().to_string(),
            sets: vec![format!("seed={}", name.len())],
        };
        queue.push(&QueuedRun::new(name, "cpu", req)).unwrap();
    }
    // What the lab does on a tick, once: the first starts, the second waits for the slot.
    let cap = stacklab::runs::queue::Capacity {
        devices: vec!["cpu".into()],
        max_per_device: 1,
    };
    let mut started = stacklab::runs::launch::start_ready(&root, &exe, &cap);
    assert_eq!(started.len(), 1);
    let (q, child) = started.pop().unwrap();
    assert_eq!(q.name, "first");
    let mut first = Training(child.unwrap());
    // Held while the queue is looked at, so it cannot end (and take the slot's next
    // request) before `runs` lists the waiting one.
    let pid = first.0.id() as i32;
    // SAFETY: signals to the training this test started (it leads its own group).
    unsafe { libc::kill(-pid, libc::SIGSTOP) };
    let waiting: Vec<String> = queue.list().into_iter().map(|q| q.name).collect();
    assert_eq!(waiting, ["second"]);
    let listed = lab.ok(&["runs", "--json"]);
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGCONT) };
    assert!(
        listed.contains("\"name\":\"second\"") && listed.contains("\"state\":\"queued\""),
        "{listed}"
    );
    assert!(first.0.wait().unwrap().success());
    assert_eq!(status(&root.join("first"))["state"], "done");
    // The first training, ending, started the second: nothing else here starts anything.
    wait_for("second to finish", 300, || {
        status(&root.join("second"))["state"] == "done"
    });
    assert!(queue.list().is_empty());
    let out = std::fs::read_to_string(root.join(".lab/first.out")).unwrap();
    assert!(out.contains("started queued run second (pid"), "{out}");
    let second = read_json(&root.join("second/status.json"));
    assert_ne!(second["pid"], status(&root.join("first"))["pid"]);
    assert!(std::fs::read_to_string(root.join(".lab/second.out"))
        .unwrap()
        .contains("done: 6 steps"));
    // Neither is left marked as starting.
    assert!(stacklab::runs::launch::starting(&root).is_empty());
}

/// `runs --json` gives a running training's GPUs and device memory from the GPU processes
/// that are its (eight fake GPUs, the training's pid on GPU 3 and another process on GPU
/// 5), null for the other runs; and, without figures, says why.
#[test]
fn runs_json_gives_a_training_its_gpus_and_memory() {
    let lab = Lab::new();
    lab.write("micro.toml", &micro_config(6, ""));
    lab.ok(&[
        "train",
        "--config",
        "micro.toml",
        "--name",
        "done",
        "--device",
        "cpu",
    ]);
    let live = start_long(&lab, "live");
    let json = |fake: Option<String>| -> serde_json::Value {
        let mut c = lab.cmd(&["runs", "--json"]);
        c.env_remove("STACKLAB_FAKE_GPUS");
        if let Some(pids) = fake {
            c.env("STACKLAB_FAKE_GPUS", "8")
                .env("STACKLAB_FAKE_GPU_PIDS", pids);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let out = json(Some(format!("{}:3,1:5", live.0.id())));
    assert_eq!(out["gpu_source"], "fake: 8 GPUs (STACKLAB_FAKE_GPUS)");
    assert!(out["no_gpu_figures"].is_null(), "{out}");
    let runs = out["runs"].as_array().unwrap().clone();
    let l = run_of(&runs, "live");
    assert_eq!(l["state"], "running");
    assert_eq!(l["gpus"], serde_json::json!([3]), "{l}");
    assert_eq!(
        l["gpu_memory_bytes"].as_u64(),
        Some(stacklab::system::fake::PROCESS_MEMORY)
    );
    let d = run_of(&runs, "done");
    assert_eq!(d["gpus"], serde_json::json!([]), "{d}");
    assert!(d["gpu_memory_bytes"].is_null(), "{d}");
    // The plain table: the device column always, GPU memory where NVML answers.
    let table = |fake: bool| {
        let mut c = lab.cmd(&["runs"]);
        c.env_remove("STACKLAB_FAKE_GPUS");
        if fake {
            c.env("STACKLAB_FAKE_GPUS", "8")
                .env("STACKLAB_FAKE_GPU_PIDS", format!("{}:3,1:5", live.0.id()));
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let t = table(true);
    let header = t.lines().nth(1).unwrap();
    assert!(
        header.contains("device") && header.contains("gpu mem"),
        "{t}"
    );
    let row = |t: &str, name: &str| {
        t.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {t}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let mem = stacklab::runs::disk::format_size(stacklab::system::fake::PROCESS_MEMORY);
    let (l, d) = (row(&t, "live"), row(&t, "done"));
    assert!(l.contains(&"cpu".to_string()), "{t}");
    assert_eq!(l.last(), Some(&mem), "{t}");
    assert_eq!(d.last(), Some(&"-".to_string()), "{t}");
    let t = table(false);
    if !t.lines().nth(1).unwrap().contains("gpu mem") {
        assert!(t.lines().nth(1).unwrap().contains("device"), "{t}");
    }
    // No GPUs: every run's GPU figures are null, and the reason is one line.
    let out = json(None);
    if let Some(why) = out["no_gpu_figures"].as_str() {
        assert!(!why.is_empty() && !why.contains('\n'), "{why}");
        let runs = out["runs"].as_array().unwrap().clone();
        assert!(run_of(&runs, "live")["gpu_memory_bytes"].is_null());
    }
    let out = json(Some(String::new()))["runs"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        run_of(&out, "live")["gpu_memory_bytes"].is_null(),
        "no process, no figure"
    );
}
