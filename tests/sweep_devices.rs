//! `sweep --devices cpu,cpu`: two independent trainings run at the same time, a model 2
//! waits for its model 1, and the rows equal those of the same sweep on one slot.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Lab;

fn sweep(lab: &Lab) -> std::path::PathBuf {
    common::mini_sweep(
        lab,
        "two",
        10,
        r#"
[grid]
pairs = [["m1", "m2"]]
use_first_layer = [false]
use_last_layer = [false, true]
"#,
    )
}

fn run_sweep(lab: &Lab, devices: &str) -> std::path::PathBuf {
    let cfg = sweep(lab);
    let out = lab.path("out");
    let err = lab.ok(&[
        "sweep",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--devices",
        devices,
    ]);
    assert!(err.contains("## Results"), "{err}");
    out
}

#[derive(Debug, serde::Deserialize)]
struct JobRecord {
    job: String,
    device: String,
    slot: usize,
    slots: Vec<usize>,
    started_at: String,
    ended_at: String,
    ok: bool,
}

fn jobs(out: &Path) -> BTreeMap<String, JobRecord> {
    std::fs::read_to_string(out.join("jobs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: JobRecord = serde_json::from_str(l).unwrap();
            (r.job.clone(), r)
        })
        .collect()
}

fn time(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap()
}

/// `stack_id` -> (val_loss_stack, checkpoints' sha256).
fn results(out: &Path) -> BTreeMap<String, (f64, String)> {
    let mut r = csv::Reader::from_path(out.join("results.csv")).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            let row: BTreeMap<String, String> = h
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(str::to_string))
                .collect();
            (
                row["stack_id"].clone(),
                (
                    row["val_loss_stack"].parse().unwrap(),
                    row["sha256"].clone(),
                ),
            )
        })
        .collect()
}

#[test]
fn two_cpu_slots_overlap_independent_trainings_and_give_the_sequential_results() {
    let parallel = Lab::new();
    let out = run_sweep(&parallel, "cpu,cpu");
    let j = jobs(&out);
    assert_eq!(j.len(), 8, "{:?}", j.keys().collect::<Vec<_>>());
    assert!(j.values().all(|r| r.ok && r.device == "cpu"));
    let (a, b) = (&j["train two-m1-r0"], &j["train two-m1-r1"]);
    // The two model-1 trainings are independent: they ran at the same time, one per slot.
    assert_ne!(a.slot, b.slot);
    assert!(
        time(&a.started_at) < time(&b.ended_at) && time(&b.started_at) < time(&a.ended_at),
        "no overlap: {a:?} {b:?}"
    );
    // Each model 2 started after its model 1 had finished, and each stack after its parts.
    for r in 0..2 {
        let m1 = &j[&format!("train two-m1-r{r}")];
        let m2 = &j[&format!("train two-m2-r{r}")];
        assert!(time(&m2.started_at) >= time(&m1.ended_at), "{m1:?} {m2:?}");
        // The run folder agrees: model 1's training had ended when model 2's started.
        let status = common::read_json(
            &parallel
                .checkpoints()
                .join(format!("two-m1-r{r}"))
                .join("status.json"),
        );
        assert_eq!(status["state"], "done");
        for (name, s) in j
            .iter()
            .filter(|(n, _)| n.starts_with(&format!("stack r{r} ")))
        {
            assert!(time(&s.started_at) >= time(&m2.ended_at), "{name}: {s:?}");
        }
    }

    // The same sweep on one slot gives the same checkpoints and the same losses.
    let sequential = Lab::new();
    let seq_out = run_sweep(&sequential, "cpu");
    let sj = jobs(&seq_out);
    assert!(sj.values().all(|r| r.slot == 0));
    let (p, s) = (results(&out), results(&seq_out));
    assert_eq!(p.len(), 4);
    assert_eq!(
        p.keys().collect::<Vec<_>>(),
        s.keys().collect::<Vec<_>>(),
        "other stacks"
    );
    for (id, (loss, sha)) in &p {
        let (seq_loss, seq_sha) = &s[id];
        assert_eq!(sha, seq_sha, "{id}: other weights");
        assert!(
            (loss - seq_loss).abs() <= 1e-9 * seq_loss.abs(),
            "{id}: {loss} vs {seq_loss}"
        );
    }
}

#[test]
fn a_device_list_that_names_no_device_is_refused_by_flag() {
    let lab = Lab::new();
    let cfg = sweep(&lab);
    for (devices, want) in [
        ("cpu,,cpu", "--devices"),
        ("tpu", "`tpu` in `tpu`"),
        ("cpu,auto", "stands for every device"),
    ] {
        let e = lab.fails(&[
            "sweep",
            "--config",
            cfg.to_str().unwrap(),
            "--dry-run",
            "--devices",
            devices,
        ]);
        assert!(e.contains(want), "{devices}: {e}");
    }
    let e = lab.fails(&[
        "sweep",
        "--config",
        cfg.to_str().unwrap(),
        "--dry-run",
        "--devices",
        "cpu,cpu",
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("--devices and --device cpu: give one of them"),
        "{e}"
    );
    let plan = lab.ok(&[
        "sweep",
        "--config",
        cfg.to_str().unwrap(),
        "--dry-run",
        "--devices",
        "cpu,cpu",
    ]);
    assert!(plan.contains("on 2 slots (cpu,cpu)"), "{plan}");
}

/// One replicate: m1 trained over two logical ranks, m2 from it, one stack.
fn ranked_sweep(lab: &Lab, processes: usize) -> std::path::PathBuf {
    let train = lab.write(
        "ranked.toml",
        &common::micro_config(6, "").replace("ranks = 1", "ranks = 2"),
    );
    lab.write(
        "sweep-dp.toml",
        &format!(
            r#"
name = "dp"
train_config = "{}"

[[models]]
name = "m1"
seeds = [0]
processes = {processes}

[[models]]
name = "m2"
from_model = "m1"
seeds = [10]

[grid]
pairs = [["m1", "m2"]]
use_first_layer = [false]
use_last_layer = [true]

[eval]
data = "embedded"
tokens = 2048
"#,
            train.display()
        ),
    )
}

#[test]
fn a_model_with_two_processes_takes_two_slots_and_trains_as_one_process_would() {
    let lab = Lab::new();
    let cfg = ranked_sweep(&lab, 2);
    let out = lab.path("out");
    let args = |devices: &str| {
        vec![
            "sweep".to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--devices".into(),
            devices.into(),
        ]
    };
    let run = |a: Vec<String>| lab.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // One slot cannot hold a training in two processes: refused before anything starts,
    // by a dry run too.
    let mut dry = args("cpu");
    dry.push("--dry-run".into());
    let refused = run(dry);
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(e.contains("train dp-m1-r0 needs 2 device slots"), "{e}");
    let refused = run(args("cpu"));
    assert!(!refused.status.success());
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(e.contains("train dp-m1-r0 needs 2 device slots"), "{e}");
    assert!(!lab.checkpoints().join("dp-m1-r0").exists());

    let ok = run(args("cpu,cpu"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let j = jobs(&out);
    let m1 = &j["train dp-m1-r0"];
    assert_eq!((m1.device.as_str(), m1.slot), ("cpu,cpu", 0));
    assert_eq!(m1.slots, [0, 1]);
    let status = common::read_json(&lab.checkpoints().join("dp-m1-r0").join("status.json"));
    assert_eq!(status["state"], "done");
    assert_eq!(status["world_size"], 2, "{status}");

    // The same sweep with m1 in one process: the same weights and the same loss.
    let single = Lab::new();
    let cfg1 = ranked_sweep(&single, 1);
    let out1 = single.path("out");
    single.ok(&[
        "sweep",
        "--config",
        cfg1.to_str().unwrap(),
        "--out",
        out1.to_str().unwrap(),
        "--devices",
        "cpu",
    ]);
    let (p, s) = (results(&out), results(&out1));
    assert_eq!(p.len(), 1);
    for (id, (loss, sha)) in &p {
        let (l1, sha1) = &s[id];
        assert_eq!(sha, sha1, "{id}: other weights");
        assert!((loss - l1).abs() <= 1e-9 * l1.abs(), "{loss} vs {l1}");
    }
}
