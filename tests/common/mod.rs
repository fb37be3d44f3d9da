//! Helpers shared by the end-to-end tests: the real binary, a shared prepared data dir, and
//! a scratch checkpoint dir per test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stacklab")
}

/// One data dir for all tests, so the embedded corpus is prepared once per build.
pub fn shared_data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stacklab-test-data")
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch area: its own checkpoint dir, the shared data dir.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("STACKLAB_DATA_DIR", shared_data_dir())
            .env("STACKLAB_CHECKPOINT_DIR", self.checkpoints())
            .env("STACKLAB_CONFIG_DIR", repo().join("configs"))
            .env_remove("STACKLAB_FAULT_KILL_IN_CHECKPOINT");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("the stacklab binary runs")
    }

    /// Runs and requires success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stacklab {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        no_panic(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and requires failure, returning stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "stacklab {args:?} should fail");
        no_panic(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

pub fn no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "a panic reached the user:\n{err}"
    );
}

/// A tiny model on the embedded corpus that trains in seconds.
pub fn micro_config(steps: i64, extra: &str) -> String {
    format!(
        r#"
seed = 0
checkpoint_every = 5
log_every = 5

[model]
vocab_size = 4096
n_layer = 2
n_head = 2
n_embd = 64
seq_len = 32
norm_wte = "none"
norm_lm_head = "rms_norm"

[optimizer.muon]
lr = 0.0036

[schedule]
steps = {steps}
warmup = 0
warmdown = {warmdown}

[batch]
global_batch = 8
micro_batch = 4
ranks = 1

[data]
embedded = true
train = ""
val = ""

[eval]
val_tokens = 2048
val_every = 5
{extra}
"#,
        warmdown = steps / 3
    )
}

/// A sweep file `sweep-NAME.toml` over two replicates of `m1` (seeds 0, 1) and `m2` (W from
/// `m1`, seeds 10, 11), both the micro config trained `steps` steps, evaluated on 2048
/// embedded tokens, with `sections` (the grid, a heal) appended.
pub fn mini_sweep(lab: &Lab, name: &str, steps: i64, sections: &str) -> PathBuf {
    let train = lab.write("micro.toml", &micro_config(steps, ""));
    lab.write(
        &format!("sweep-{name}.toml"),
        &format!(
            r#"
name = "{name}"
train_config = "{}"

[[models]]
name = "m1"
seeds = [0, 1]

[[models]]
name = "m2"
from_model = "m1"
seeds = [10, 11]

[eval]
data = "embedded"
tokens = 2048

{sections}
"#,
            train.display()
        ),
    )
}

/// Trains `m1` and `m2` (the micro config for 5 steps; `m2` from another seed with `m1`'s
/// `W` frozen): the smallest pair the stack tools work on.
pub fn train_pair(lab: &Lab) {
    lab.write("m1.toml", &micro_config(5, ""));
    lab.write(
        "m2.toml",
        &micro_config(5, "").replace("seed = 0", "seed = 1\nfrom_model = \"m1\""),
    );
    for name in ["m1", "m2"] {
        lab.ok(&[
            "train",
            "--config",
            &format!("{name}.toml"),
            "--name",
            name,
            "--device",
            "cpu",
        ]);
    }
}

pub fn read_json_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A run's state in its `status.json` (empty when unreadable).
pub fn state(run: &Path) -> String {
    read_json(&run.join("status.json"))["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// How many rows `metrics.jsonl` has for each step.
pub fn rows_per_step(run: &Path) -> std::collections::BTreeMap<i64, usize> {
    let mut rows = std::collections::BTreeMap::new();
    for r in read_json_lines(&run.join("metrics.jsonl")) {
        *rows.entry(r["step"].as_i64().unwrap()).or_insert(0) += 1;
    }
    rows
}

/// One row for each of the steps 0 (the first validation) to `steps`, and no other.
pub fn assert_one_row_per_step(run: &Path, steps: i64) {
    let rows = rows_per_step(run);
    let expected: std::collections::BTreeMap<i64, usize> = (0..=steps).map(|s| (s, 1)).collect();
    assert_eq!(rows, expected, "rows per step of {}", run.display());
}

/// A CSV file's rows, each a map from its header's columns to the row's values.
pub fn csv_rows(csv: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(csv).unwrap();
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            h.iter()
                .cloned()
                .zip(rec.unwrap().iter().map(str::to_string))
                .collect()
        })
        .collect()
}
