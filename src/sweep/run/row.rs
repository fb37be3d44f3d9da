//! One stack's row of `results.csv`: the stack evaluated as a child `stacklab stack --json`,
//! its result joined with the sweep's keys, and the row appended atomically under a lock.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::stacklab;
use crate::sweep::config::SweepConfig;
use crate::sweep::plan::config_hash;
use crate::sweep::plan::{Plan, PlannedRun, PlannedStack};
use crate::sweep::tables::{Rows, NORM_MISMATCH, SUPERSEDED};

/// The columns of a sweep's `results.csv`: the sweep's own keys, then the stack's. A row's
/// identity is its `stack_id` with the checkpoints' `sha256`, `model_ids` and the training
/// configs' `config_sha256`; a row computed from checkpoints since retrained is kept,
/// marked `superseded`, and left out of the tables.
pub const COLUMNS: [&str; 31] = [
    "stack_id",
    "sweep",
    "replicate",
    "models",
    "seeds",
    "training_norms",
    "coconut_every",
    "coconut_mode",
    "val_loss_stack",
    "val_losses",
    "mean_val_loss",
    "delta_vs_best",
    "use_first_layer",
    "use_last_layer",
    "norm_wte",
    "norm_lm_head",
    "norm_inter_model",
    "unique_model",
    NORM_MISMATCH,
    "block_list",
    "ranges",
    "checkpoints",
    "sha256",
    "model_ids",
    "config_sha256",
    "data",
    "tokens",
    "seq_len",
    "seconds",
    "created_at",
    SUPERSEDED,
];

/// Appends one row under the file's lock, marking the rows it replaces (the same
/// `stack_id`) superseded. The file is rewritten with the current columns (older files
/// gain the new ones, empty) through a temporary and a rename, so an interrupted sweep
/// never leaves half a row; a file that cannot be read is an error, never taken as empty.
pub(super) fn append_row(path: &Path, values: &[String]) -> Result<()> {
    anyhow::ensure!(
        values.len() == COLUMNS.len(),
        "a row has {} values",
        values.len()
    );
    let _lock = crate::filelock::exclusive(&crate::filelock::beside(path))?;
    let existing = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Rows::default(),
        _ => Rows::read_csv(path)?,
    };
    let id = &values[0];
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for r in &existing.rows {
        let record: Vec<&str> = COLUMNS
            .iter()
            .map(|c| {
                if *c == SUPERSEDED && r.get("stack_id") == Some(id) {
                    "true"
                } else {
                    r.get(*c).map(String::as_str).unwrap_or("")
                }
            })
            .collect();
        w.write_record(&record)?;
    }
    w.write_record(values)?;
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    crate::paths::write_atomic(path, &bytes)
}

pub(super) fn stack_row(
    s: &PlannedStack,
    cfg: &SweepConfig,
    plan: &Plan,
    device: &str,
) -> Result<Vec<String>> {
    let mut args: Vec<String> = vec!["stack".into()];
    match &s.spec {
        Some(p) => args.extend(["--spec".into(), p.display().to_string()]),
        None => {
            args.push("--models".into());
            args.extend(s.dirs.iter().map(|d| d.display().to_string()));
            if s.use_first_layer == Some(true) {
                args.push("--use-first-layer".into());
            }
            if s.use_last_layer == Some(true) {
                args.push("--use-last-layer".into());
            }
            args.extend([
                "--norm-wte".into(),
                s.norms.norm_wte.to_string(),
                "--norm-lm-head".into(),
                s.norms.norm_lm_head.to_string(),
                "--norm-inter-model".into(),
                s.norms.norm_inter_model.to_string(),
            ]);
        }
    }
    let e = &cfg.eval;
    if !e.data.is_empty() {
        args.extend(["--data".into(), e.data.clone()]);
    }
    if e.tokens > 0 {
        args.extend(["--tokens".into(), e.tokens.to_string()]);
    }
    if let Some(t) = e.seq_len {
        args.extend(["--seq-len".into(), t.to_string()]);
    }
    if let Some(b) = e.batch {
        args.extend(["--batch".into(), b.to_string()]);
    }
    args.extend(["--json".into(), "--device".into(), device.into()]);
    let logs = plan.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join("stacks.log"))?;
    let out = Command::new(stacklab()?)
        .args(&args)
        .stdin(Stdio::null())
        .stderr(log)
        .output()
        .context("cannot start stacklab stack")?;
    if out.status.code() == Some(130) || out.status.code().is_none() {
        bail!(
            "interrupted while evaluating {}; run the same sweep again to resume",
            s.describe()
        );
    }
    if !out.status.success() {
        bail!(
            "evaluating {} failed (see {})",
            s.describe(),
            logs.join("stacks.log").display()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(last)
        .with_context(|| format!("stack printed no JSON result for {}", s.describe()))?;
    let runs: Vec<&PlannedRun> = s
        .models
        .iter()
        .map(|m| {
            plan.runs
                .iter()
                .find(|r| Some(r.replicate) == s.replicate && &r.model == m)
                .expect("planned")
        })
        .collect();
    let join = |it: Vec<String>| it.join(";");
    let models = v["models"].as_array().cloned().unwrap_or_default();
    let trained: Vec<(String, String)> = models
        .iter()
        .map(|m| {
            (
                m["trained_norm_wte"].as_str().unwrap_or("").to_string(),
                m["trained_norm_lm_head"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let (wte, head) = (
        v["norm_wte"].as_str().unwrap_or("").to_string(),
        v["norm_lm_head"].as_str().unwrap_or("").to_string(),
    );
    let mismatch = trained
        .iter()
        .any(|(w, h)| (!w.is_empty() && *w != wte) || (!h.is_empty() && *h != head));
    let every: Vec<String> = runs
        .iter()
        .map(|r| r.config.coconut.every.to_string())
        .collect();
    let modes: Vec<String> = runs
        .iter()
        .map(|r| {
            if r.config.coconut.every > 0 {
                r.config.coconut.mode.as_str().to_string()
            } else {
                String::new()
            }
        })
        .collect();
    let same = |v: Vec<String>| -> String {
        if v.iter().all(|x| *x == v[0]) {
            v.first().cloned().unwrap_or_default()
        } else {
            v.join(";")
        }
    };
    let num = |k: &str| v[k].as_f64().map(|x| x.to_string()).unwrap_or_default();
    let flag = |k: &str| v[k].as_bool().map(|b| b.to_string()).unwrap_or_default();
    Ok(vec![
        s.id.clone(),
        cfg.name.clone(),
        s.replicate.map(|r| r.to_string()).unwrap_or_default(),
        match &s.spec {
            // A spec's stack is the spec: its rows never pool with another spec's.
            Some(p) => format!(
                "spec {}",
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            None => join(s.models.clone()),
        },
        join(runs.iter().map(|r| r.seed.to_string()).collect()),
        join(trained.iter().map(|(w, h)| format!("{w}/{h}")).collect()),
        if runs.is_empty() {
            String::new()
        } else {
            same(every)
        },
        if runs.is_empty() {
            String::new()
        } else {
            same(modes)
        },
        num("val_loss_stack"),
        join(
            v["val_losses"]
                .as_array()
                .map(|a| a.iter().map(|x| x.to_string()).collect())
                .unwrap_or_default(),
        ),
        num("mean_val_loss"),
        num("delta_vs_best"),
        flag("use_first_layer"),
        flag("use_last_layer"),
        wte,
        head,
        v["norm_inter_model"].as_str().unwrap_or("").to_string(),
        flag("unique_model"),
        mismatch.to_string(),
        v["block_list"].as_str().unwrap_or("").to_string(),
        join(
            models
                .iter()
                .map(|m| format!("{}:{}", m["start"], m["end"]))
                .collect(),
        ),
        join(
            models
                .iter()
                .map(|m| m["path"].as_str().unwrap_or("").to_string())
                .collect(),
        ),
        join(
            models
                .iter()
                .map(|m| m["sha256"].as_str().unwrap_or("").to_string())
                .collect(),
        ),
        join(
            models
                .iter()
                .map(|m| m["model_id"].as_str().unwrap_or("").to_string())
                .collect(),
        ),
        join(runs.iter().map(|r| config_hash(&r.config)).collect()),
        v["data"].as_str().unwrap_or("").to_string(),
        v["tokens"]
            .as_i64()
            .map(|x| x.to_string())
            .unwrap_or_default(),
        v["seq_len"]
            .as_i64()
            .map(|x| x.to_string())
            .unwrap_or_default(),
        num("seconds"),
        chrono::Local::now().to_rfc3339(),
        "false".into(),
    ])
}
