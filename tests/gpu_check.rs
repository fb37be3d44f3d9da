//! `scripts/gpu-check.sh` in its CPU mode (`GPU_CHECK_CPU=1`), end to end: every step runs
//! (PyTorch's eager and compiled references included), the table has every section, `$OUT`
//! receives the table and one archive of the logs, and a second call into the same `$OUT`
//! works, as a rerun on a warm GPU machine must (each run in its own temporary folder,
//! removed afterwards). About two minutes on 2 cores, mostly `torch.compile`.

mod common;

use std::path::Path;
use std::process::Command;

fn gpu_check(
    out: &Path,
    tmp: &Path,
    only: Option<&str>,
    budget_s: Option<u32>,
) -> (bool, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(common::repo().join("scripts/gpu-check.sh"))
        .env("GPU_CHECK_CPU", "1")
        .env("STACKLAB_BIN", common::bin())
        .env("OUT", out)
        .env("TMPDIR", tmp)
        .env("STACKLAB_DATA_DIR", common::shared_data_dir())
        .env("STACKLAB_CONFIG_DIR", common::repo().join("configs"))
        .env_remove("ONLY")
        .env_remove("KEEP_WORK")
        .env_remove("STEPS")
        .env_remove("VAL_TOKENS")
        .env_remove("BUDGET_S");
    if let Some(only) = only {
        cmd.env("ONLY", only);
    }
    if let Some(b) = budget_s {
        cmd.env("BUDGET_S", b.to_string());
    }
    let o = cmd.output().expect("bash runs scripts/gpu-check.sh");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The rows of the `== steps` section: (step, outcome).
fn step_rows(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .skip_while(|l| *l != "== steps")
        .skip(1)
        .take_while(|l| !l.starts_with("=="))
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_string();
            let outcome: Vec<&str> = f.skip(2).collect();
            (name, outcome.join(" "))
        })
        .collect()
}

fn out_files(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const STEPS: [&str; 9] = [
    "doctor",
    "bench",
    "reference_eager",
    "reference_compiled",
    "parts",
    "reference_eval_eager",
    "reference_eval_compiled",
    "train",
    "dist",
];

#[test]
fn the_cpu_mode_runs_every_step_and_a_rerun_works() {
    let dir = tempfile::tempdir().unwrap();
    let (out, tmp) = (dir.path().join("out"), dir.path().join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();

    let (ok, table, err) = gpu_check(&out, &tmp, None, None);
    assert!(ok, "gpu-check failed:\n{table}\n{err}");
    let rows = step_rows(&table);
    let names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, STEPS, "{table}");
    for (name, outcome) in &rows {
        assert_eq!(outcome, "ok", "step {name}:\n{table}");
    }
    for section in [
        "== doctor",
        "== training throughput",
        "== peak memory",
        "== stages (stacklab bench --part)",
        "== evaluation throughput",
        "== loss curve",
    ] {
        assert!(table.contains(section), "no `{section}`:\n{table}");
    }
    for row in [
        "stacklab bench ",
        "pytorch eager ",
        "pytorch compiled ",
        "pytorch eval compiled ",
    ] {
        let line = table.lines().find(|l| l.starts_with(row)).unwrap_or("");
        assert!(
            line.contains(" tok/s"),
            "`{row}` has no throughput:\n{table}"
        );
    }
    assert!(table.contains("ratio stacklab / compiled "), "{table}");
    assert!(
        table.contains("'val_loss'"),
        "no validation in the loss curve:\n{table}"
    );
    // The c10d step at world size 1 (Gloo on the CPU; NCCL on a GPU).
    assert!(
        table.contains("== data parallelism at world size 1")
            && table.contains("ok: rank 0 of 1 (gloo)")
            && table.contains("; 1 started while the last backward pass ran"),
        "{table}"
    );
    // What comes back from a device call: the table and one archive, nothing else.
    assert_eq!(out_files(&out), ["gpu-check-logs.tar.gz", "summary.txt"]);
    assert_eq!(
        std::fs::read_to_string(out.join("summary.txt")).unwrap(),
        table
    );
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(out.join("gpu-check-logs.tar.gz"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in [
        "steps.tsv",
        "bench.out",
        "train.err",
        "metrics.jsonl",
        "summary.txt",
    ] {
        assert!(
            listing.lines().any(|l| l == format!("logs/{f}")),
            "{f} not archived:\n{listing}"
        );
    }

    // A second call on the same machine, two steps only, training included.
    let (ok, table, err) = gpu_check(&out, &tmp, Some("bench,train"), None);
    assert!(ok, "the rerun failed:\n{table}\n{err}");
    for (name, outcome) in step_rows(&table) {
        let want = if name == "bench" || name == "train" {
            "ok"
        } else {
            "not selected (ONLY)"
        };
        assert_eq!(outcome, want, "step {name}:\n{table}");
    }
    assert_eq!(out_files(&out), ["gpu-check-logs.tar.gz", "summary.txt"]);
    // Each run's temporary folder is gone (torch.compile keeps its cache beside them).
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stacklab-gpu-check."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A budget that runs out: the steps past it are skipped, said so in their rows, and the
/// whole table is still printed and returned; the call exits non-zero.
#[test]
fn steps_past_the_budget_are_skipped_and_the_table_is_still_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (out, tmp) = (dir.path().join("out"), dir.path().join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    // 25 s less the 20 s kept for the table: time for doctor and bench at most.
    let (ok, table, err) = gpu_check(&out, &tmp, None, Some(25));
    assert!(!ok, "a check with skipped steps must fail:\n{table}\n{err}");
    let rows = step_rows(&table);
    assert_eq!(rows.len(), STEPS.len(), "{table}");
    for (name, outcome) in &rows[2..] {
        assert_eq!(
            outcome, "skipped: the check's budget was spent",
            "step {name}:\n{table}"
        );
    }
    assert!(
        table.contains("training: skipped: the check's budget was spent"),
        "{table}"
    );
    assert!(table.contains("== evaluation throughput"), "{table}");
    assert_eq!(out_files(&out), ["gpu-check-logs.tar.gz", "summary.txt"]);
}
