//! Carrying out a sweep's plan: each run trained (or resumed) as a child `stacklab train`,
//! each stack evaluated as a child `stacklab stack --json`, one raw row appended to
//! `results.csv` per stack, and the tables rewritten from that file. An interrupted sweep
//! resumes: finished runs are reused and rows already written are not recomputed.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::config::SweepConfig;
use super::plan::{Plan, PlannedRun, PlannedStack, RunAction, RESULTS, TABLES};
use super::tables::{standard_tables, to_markdown, Rows};
use crate::jobs::request::{TrainRequest, TrainStart};
use row::{append_row, stack_row};

mod row;

fn train_run(r: &PlannedRun, out: &Path, device: &str) -> Result<()> {
    let configs = out.join("configs");
    std::fs::create_dir_all(&configs)?;
    let cfg_path = configs.join(format!("{}.toml", r.name));
    crate::paths::write_atomic(&cfg_path, r.config.to_toml_string().as_bytes())?;
    let start = match r.action {
        RunAction::Train => TrainStart::New {
            config: cfg_path.display().to_string(),
            name: Some(r.name.clone()),
            sets: vec![],
        },
        RunAction::Resume => TrainStart::Resume(r.dir.clone()),
        RunAction::Reuse => return Ok(()),
    };
    let req = TrainRequest {
        start,
        stop_after: None,
        device: device.to_string(),
        checkpoint_dir: Some(
            r.dir
                .parent()
                .expect("a run dir has a parent")
                .to_path_buf(),
        ),
        nproc: None,
    };
    let log = out.join("logs").join(format!("{}.log", r.name));
    crate::jobs::run_training(&req, &r.name, &log, "sweep")
}

/// Writes `tables.md` from a results CSV (stacklab's or the seed's raw format) and returns it.
pub fn write_tables(csv: &Path, out_dir: &Path) -> Result<String> {
    let mut rows = Rows::read_csv(csv)?;
    let mut required = vec!["val_loss_stack"];
    if super::seed_rows::is_seed_format(&rows) {
        required.extend(["val_losses", "use_first_layer", "use_last_layer"]);
        if rows.has("norm_wtes") {
            required.push("norm_lm_heads");
        }
    }
    super::columns::require_columns(csv, &rows.columns, &required)?;
    if super::seed_rows::is_seed_format(&rows) {
        rows = super::seed_rows::from_seed_rows(&rows)?;
    }
    if rows.rows.is_empty() {
        bail!("{} has no result rows yet", csv.display());
    }
    let decimals = 3;
    let current = rows
        .rows
        .iter()
        .filter(|r| r.get(super::tables::SUPERSEDED).map(String::as_str) != Some("true"))
        .count();
    let md = format!(
        "# Results ({current} rows of {})\n\n{}",
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
        // Rows of this stack from other checkpoints are kept, marked superseded.
        append_row(&csv, &row)?;
        progress.line(&format!(
            "{}: val_loss_stack {}",
            s.describe(),
            row.val_loss_stack
        ));
    }
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    write_tables(&csv, &plan.out)
}
