//! Carrying out a sweep's plan: each run trained (or resumed) as a child `stacklab train`,
//! each stack evaluated as a child `stacklab stack --json`, one raw row appended to
//! `results.csv` per stack, and the tables rewritten from that file. An interrupted sweep
//! resumes: finished runs are reused and rows already written are not recomputed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::config::SweepConfig;
use super::plan::{Plan, PlannedRun, PlannedStack, RunAction, RESULTS, TABLES};
use super::tables::{standard_tables, to_markdown, Rows, NORM_MISMATCH};

/// The columns of a sweep's `results.csv`: the sweep's own keys, then the stack's.
pub const COLUMNS: [&str; 27] = [
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
    "checkpoints",
    "sha256",
    "data",
    "tokens",
    "seq_len",
    "seconds",
    "created_at",
];

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Appends one row (the header first when the file is new), rewriting the file through a
/// temporary and a rename so an interrupted sweep never leaves half a row.
fn append_row(path: &Path, values: &[String]) -> Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if text.is_empty() {
        text.push_str(&COLUMNS.join(","));
        text.push('\n');
    }
    let row: Vec<String> = values.iter().map(|v| csv_field(v)).collect();
    text.push_str(&row.join(","));
    text.push('\n');
    crate::paths::write_atomic(path, text.as_bytes())
}

fn stacklab() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the stacklab executable")
}

fn train_run(r: &PlannedRun, out: &Path, device: &str) -> Result<()> {
    let configs = out.join("configs");
    let logs = out.join("logs");
    std::fs::create_dir_all(&configs)?;
    std::fs::create_dir_all(&logs)?;
    let cfg_path = configs.join(format!("{}.toml", r.name));
    crate::paths::write_atomic(&cfg_path, r.config.to_toml_string().as_bytes())?;
    let mut args: Vec<String> = vec!["train".into()];
    match r.action {
        RunAction::Train => args.extend([
            "--config".into(),
            cfg_path.display().to_string(),
            "--name".into(),
            r.name.clone(),
        ]),
        RunAction::Resume => args.extend(["--resume".into(), r.dir.display().to_string()]),
        RunAction::Reuse => return Ok(()),
    }
    args.extend(["--device".into(), device.into()]);
    let log_path = logs.join(format!("{}.log", r.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let status = Command::new(stacklab()?)
        .args(&args)
        .env(
            crate::paths::ENV_CHECKPOINT_DIR,
            r.dir.parent().expect("a run dir has a parent"),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot start stacklab train")?;
    if status.code() == Some(130) || status.code().is_none() {
        bail!(
            "interrupted while training {}; run the same sweep again to resume",
            r.name
        );
    }
    if !status.success() {
        bail!(
            "training {} failed (see {}); fix it and run the sweep again",
            r.name,
            log_path.display()
        );
    }
    Ok(())
}

fn stack_row(
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
        join(if s.models.is_empty() {
            models
                .iter()
                .map(|m| m["label"].as_str().unwrap_or("").to_string())
                .collect()
        } else {
            s.models.clone()
        }),
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
                .map(|m| m["path"].as_str().unwrap_or("").to_string())
                .collect(),
        ),
        join(
            models
                .iter()
                .map(|m| m["sha256"].as_str().unwrap_or("").to_string())
                .collect(),
        ),
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
    ])
}

/// Writes `tables.md` from a results CSV (stacklab's or the seed's raw format) and returns it.
pub fn write_tables(csv: &Path, out_dir: &Path) -> Result<String> {
    let mut rows = Rows::read_csv(csv)?;
    if super::seed_rows::is_seed_format(&rows) {
        rows = super::seed_rows::from_seed_rows(&rows)?;
    }
    if rows.rows.is_empty() {
        bail!("{} has no result rows yet", csv.display());
    }
    let decimals = 3;
    let md = format!(
        "# Results ({} rows of {})\n\n{}",
        rows.rows.len(),
        csv.display(),
        to_markdown(&standard_tables(&rows)?, decimals)
    );
    crate::paths::write_atomic(&out_dir.join(TABLES), md.as_bytes())?;
    Ok(md)
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    done: u64,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} items, eta {eta}")
                    .expect("valid template"),
            );
            b
        });
        Progress {
            bar,
            start: Instant::now(),
            done: 0,
            total,
        }
    }

    fn line(&mut self, msg: &str) {
        self.done += 1;
        let msg = format!(
            "[{}/{}] {msg} ({:.0}s)",
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64()
        );
        match &self.bar {
            Some(b) => {
                b.println(msg);
                b.inc(1);
            }
            None => eprintln!("{msg}"),
        }
    }
}

/// Trains what is missing, evaluates what is not in `results.csv`, writes the tables.
pub fn execute(plan: &Plan, cfg: &SweepConfig, device: &str) -> Result<String> {
    if !plan.missing.is_empty() {
        bail!("the sweep cannot start:\n  {}", plan.missing.join("\n  "));
    }
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("cannot create {}", plan.out.display()))?;
    let to_train: Vec<&PlannedRun> = plan
        .runs
        .iter()
        .filter(|r| r.action != RunAction::Reuse)
        .collect();
    let to_eval: Vec<&PlannedStack> = plan.stacks.iter().filter(|s| !s.done).collect();
    let mut progress = Progress::new((to_train.len() + to_eval.len()) as u64);
    for r in to_train {
        train_run(r, &plan.out, device)?;
        progress.line(&format!("trained {}", r.name));
    }
    let csv = plan.out.join(RESULTS);
    for s in to_eval {
        let row = stack_row(s, cfg, plan, device)?;
        append_row(&csv, &row)?;
        progress.line(&format!("{}: val_loss_stack {}", s.describe(), row[8]));
    }
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    write_tables(&csv, &plan.out)
}
