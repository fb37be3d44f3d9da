//! A training that meets a fault ends cleanly and loses nothing, on real tiny trainings: a
//! panic in the loop (and libtorch's out-of-memory) ends it failed and starts the next
//! queued run; output that goes away and a hangup end nothing; a corrupted optimizer file
//! is refused by name.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{assert_one_row_per_step, micro_config, read_json, state, Lab};
use stacklab::runs::queue::{Queue, QueuedRun, Request};

/// Waits for a run that something other than the test started, for at most `timeout_s`.
fn wait_for_state(run: &Path, wanted: &str, timeout_s: u64) {
    let t0 = Instant::now();
    while std::fs::read_to_string(run.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_none_or(|s| s["state"] != wanted)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(timeout_s),
            "{} never became {wanted}",
            run.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_panic_at_step_n_fails_the_run_and_starts_the_next_queued_request() {
    let lab = Lab::new();
    let cfg = lab.write("p.toml", &micro_config(10, ""));
    let next = lab.write("next.toml", &micro_config(2, ""));
    let queue = Queue::new(&lab.checkpoints());
    let req = Request::New {
        config: next.display().to_string(),
        sets: vec![],
    };
    queue.push(&QueuedRun::new("next", "cpu", req)).unwrap();
    let out = lab
        .cmd(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--name",
            "p",
            "--device",
            "cpu",
        ])
        .env("STACKLAB_FAULT_PANIC_AT_STEP", "3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let run = lab.checkpoints().join("p");
    let status = read_json(&run.join("status.json"));
    assert_eq!(status["state"], "failed");
    let msg = status["message"].as_str().unwrap();
    assert_eq!(
        msg,
        "internal error in step 3, micro-batch 1 of 2: injected fault: STACKLAB_FAULT_PANIC_AT_STEP=3; no checkpoint was written"
    );
    assert!(err.contains(&format!("error: {msg}")), "{err}");
    assert!(std::fs::read_to_string(run.join("train.log"))
        .unwrap()
        .contains(msg));
    assert_one_row_per_step(&run, 2);
    // Its end started the next request, as any other end does (the hook's step 3 is past
    // the next run's end).
    assert!(
        err.contains("started queued run next (pid"),
        "the ending training starts the next:\n{err}"
    );
    wait_for_state(&lab.checkpoints().join("next"), "done", 300);
    assert!(queue.list().is_empty());
    // It resumes from step 0 (no checkpoint) like any failed run.
    lab.ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_one_row_per_step(&run, 10);
}

#[test]
fn out_of_memory_in_the_loop_says_which_batch_and_what_to_lower() {
    let lab = Lab::new();
    let cfg = lab.write(
        "oom.toml",
        &micro_config(6, "").replace("checkpoint_every = 5", "checkpoint_every = 1"),
    );
    let out = lab
        .cmd(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--name",
            "oom",
            "--device",
            "cpu",
        ])
        .env("STACKLAB_FAULT_PANIC_AT_STEP", "2:oom")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let run = lab.checkpoints().join("oom");
    let status = read_json(&run.join("status.json"));
    assert_eq!(status["state"], "failed");
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.starts_with("the device ran out of memory in step 2, micro-batch 1 of 2 (4 sequences of 32 tokens): lower batch.micro_batch (now 4; batch.global_batch = 8 stays")
            && msg.contains("CUDA out of memory. Tried to allocate 2.00 GiB")
            && msg.ends_with("; the last good checkpoint is step 1")
            && !msg.contains("Exception raised"),
        "{msg}"
    );
}

/// The reader of a training's output goes away at step 1 (`... 2>&1 | head`, a closed
/// terminal): the training goes on to its end and says so in its own files.
#[test]
fn a_training_whose_output_reader_exits_at_step_1_ends_done() {
    let lab = Lab::new();
    let cfg = lab.write(
        "pipe.toml",
        &micro_config(12, "").replace("log_every = 5", "log_every = 1"),
    );
    let mut child = lab
        .cmd(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--name",
            "pipe",
            "--device",
            "cpu",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("step 1/") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the training ended before step 1"
        );
    }
    // The reader exits: both pipes close.
    drop(stderr);
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "the training died with {status}");
    let run = lab.checkpoints().join("pipe");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 12);
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("done: 12 steps"), "{log}");
}

/// A closed terminal or a dropped SSH link sends SIGHUP: the training goes on to its end.
#[test]
fn a_hangup_does_not_end_the_training() {
    let lab = Lab::new();
    let cfg = lab.write("hup.toml", &micro_config(30, ""));
    let mut cmd = lab.cmd(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "hup",
        "--device",
        "cpu",
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // As a shell in a terminal starts it: SIGHUP's default action (the test runner's own
    // may be "ignore", which a child inherits).
    use std::os::unix::process::CommandExt;
    // SAFETY: signal() is async-signal-safe, the only call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let run = lab.checkpoints().join("hup");
    // Once it trains (its first step logged), as long as it lives.
    while rows_in(&run) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "ended before training");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a signal to the training this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let status = child.wait().unwrap();
    assert!(status.success(), "the training died with {status}");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 30);
}

fn rows_in(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn corrupt_optimizer(file: &Path, name: &str, with: tch::Tensor) {
    let mut tensors = stacklab::model::weights::read_safetensors(file).unwrap();
    assert!(tensors.contains_key(name), "{name} in {}", file.display());
    tensors.insert(name.to_string(), with);
    let named: Vec<(String, tch::Tensor)> = tensors.into_iter().collect();
    tch::Tensor::write_safetensors(&named, file).unwrap();
}

#[test]
fn a_resumed_optimizer_state_of_the_wrong_shape_or_dtype_is_refused_by_name() {
    stacklab::device::init();
    let lab = Lab::new();
    let cfg = lab.write("opt.toml", &micro_config(10, ""));
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "opt",
        "--stop-after",
        "5",
        "--device",
        "cpu",
    ]);
    let run = lab.checkpoints().join("opt");
    let file = run.join("step_000005/optimizer.safetensors");
    let good = std::fs::read(&file).unwrap();
    let resume = [
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let cases = [
        (
            "adamw.exp_avg",
            tch::Tensor::zeros([3, 64], (tch::Kind::Float, tch::Device::Cpu)),
            "tensor `adamw.exp_avg` has shape [3, 64], expected [4096, 64] (the shape of W)",
        ),
        (
            "adamw.exp_avg_sq",
            tch::Tensor::zeros([4096, 64], (tch::Kind::Int64, tch::Device::Cpu)),
            "tensor `adamw.exp_avg_sq` has dtype Int64, expected a floating-point one",
        ),
        (
            "muon.momentum.transformer.h.0.mlp.c_fc.weight",
            tch::Tensor::zeros([64, 256], (tch::Kind::Float, tch::Device::Cpu)),
            "tensor `muon.momentum.transformer.h.0.mlp.c_fc.weight` has shape [64, 256], expected [256, 64]",
        ),
    ];
    for (name, with, said) in cases {
        std::fs::write(&file, &good).unwrap();
        corrupt_optimizer(&file, name, with);
        let err = lab.fails(&resume);
        assert!(
            err.contains(&file.display().to_string()) && err.contains(said),
            "{name}:\n{err}"
        );
        assert_eq!(state(&run), "stopped", "a refused resume changes nothing");
    }
    std::fs::write(&file, &good).unwrap();
    lab.ok(&resume);
    assert_one_row_per_step(&run, 10);
}
