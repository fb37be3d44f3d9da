//! Faults that must lose nothing, on real tiny trainings: two writers of one run started at
//! the same moment, a panic in the loop (and libtorch's out-of-memory), output that goes
//! away mid-run, a corrupted optimizer file, an unreadable status.

mod common;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{micro_config, read_json, read_json_lines, Lab};
use stacklab::runs::queue::{Queue, QueuedRun, Request};

fn state(run: &Path) -> String {
    read_json(&run.join("status.json"))["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// How many rows `metrics.jsonl` has for each step.
fn rows_per_step(run: &Path) -> BTreeMap<i64, usize> {
    let mut rows = BTreeMap::new();
    for r in read_json_lines(&run.join("metrics.jsonl")) {
        *rows.entry(r["step"].as_i64().unwrap()).or_insert(0) += 1;
    }
    rows
}

/// One row for each of the steps 0 (the first validation) to `steps`, and no other.
fn assert_one_row_per_step(run: &Path, steps: i64) {
    let rows = rows_per_step(run);
    let expected: BTreeMap<i64, usize> = (0..=steps).map(|s| (s, 1)).collect();
    assert_eq!(rows, expected, "rows per step of {}", run.display());
}

/// Starts the same command twice at once and returns both (pid, output).
fn twice_at_once(lab: &Lab, args: &[&str]) -> [(u32, Output); 2] {
    let spawn = || {
        lab.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (pa, pb) = (a.id(), b.id());
    [
        (pa, a.wait_with_output().unwrap()),
        (pb, b.wait_with_output().unwrap()),
    ]
}

/// Of two runs started at once, one succeeded and the other refused, naming the first's
/// pid; returns the refusal.
fn one_ran_one_refused(both: [(u32, Output); 2]) -> String {
    for (_, out) in &both {
        common::no_panic(out);
    }
    let ok: Vec<&(u32, Output)> = both.iter().filter(|(_, o)| o.status.success()).collect();
    assert_eq!(
        ok.len(),
        1,
        "exactly one of the two runs: {:?}",
        both.iter()
            .map(|(_, o)| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
    let winner = ok[0].0;
    let (_, lost) = both.iter().find(|(p, _)| *p != winner).unwrap();
    let err = String::from_utf8_lossy(&lost.stderr).into_owned();
    assert!(
        err.contains(&format!("is being trained by pid {winner}")),
        "the refusal names the training's pid {winner}:\n{err}"
    );
    err
}

#[test]
fn two_trains_of_one_name_started_together_one_trains_one_refuses() {
    let lab = Lab::new();
    let cfg = lab.write("twin.toml", &micro_config(40, ""));
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "twin",
        "--device",
        "cpu",
    ];
    let err = one_ran_one_refused(twice_at_once(&lab, &args));
    assert!(err.contains("choose another --name"), "{err}");
    let run = lab.checkpoints().join("twin");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 40);
}

#[test]
fn two_resumes_started_together_one_resumes_one_refuses() {
    let lab = Lab::new();
    let cfg = lab.write("res.toml", &micro_config(40, ""));
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "res",
        "--stop-after",
        "3",
        "--device",
        "cpu",
    ]);
    let run = lab.checkpoints().join("res");
    assert_eq!(state(&run), "stopped");
    let err = one_ran_one_refused(twice_at_once(
        &lab,
        &[
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    ));
    assert!(err.contains("cannot resume: run `res`"), "{err}");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 40);
}

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

#[test]
fn an_unreadable_status_makes_a_lost_run_that_resumes_and_removes() {
    let lab = Lab::new();
    let cfg = lab.write("u.toml", &micro_config(8, ""));
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "u",
        "--stop-after",
        "5",
        "--device",
        "cpu",
    ]);
    let run = lab.checkpoints().join("u");
    std::fs::write(run.join("status.json"), "{\"state\": \"runn").unwrap();
    let listed: serde_json::Value = serde_json::from_str(&lab.ok(&["runs", "--json"])).unwrap();
    let u = &listed["runs"][0];
    assert_eq!(
        (u["name"].as_str(), u["state"].as_str()),
        (Some("u"), Some("lost"))
    );
    assert!(
        u["problem"]
            .as_str()
            .unwrap()
            .contains("status.json is unreadable"),
        "{u}"
    );
    let out = lab.run(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    common::no_panic(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming it as a lost run"), "{err}");
    assert_eq!(state(&run), "done");
    assert_one_row_per_step(&run, 8);
    // Lost again (no status at all), then removed.
    std::fs::remove_file(run.join("status.json")).unwrap();
    let listed = lab.ok(&["runs"]);
    assert!(listed.contains("lost"), "{listed}");
    let out = lab.ok(&["rm", "u"]);
    assert!(out.contains("removed u"), "{out}");
    assert!(!run.exists());
}
