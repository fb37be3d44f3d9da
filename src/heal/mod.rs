//! `stacklab heal`: does a stack recover with training, and faster than the alternatives?
//! Arms, each a normal run in the checkpoint dir (lineage recorded, resumable, visible in
//! the lab), trained K steps on the same data order and token budget with the parts' recipe
//! (or `--config`), fresh optimizer state, `W` frozen unless `--train-w`:
//!
//! - `stack`: the stack itself (`init_from` the stack saved as a checkpoint);
//! - `self`: the first part stacked on itself with the same flags and norms;
//! - `scratch`: a fresh model of the stack's depth and width with the first part's `W`;
//! - `continue`: the better part trained K more steps.
//!
//! Each arm's curve is its run's own validation rows (`metrics.jsonl`); the heal folder
//! holds the arms' starting checkpoints, their configs, logs, the CSV, JSON and the figure.
//! An interrupted heal resumes: finished arms are reused, the others resumed.

mod arms;
mod report;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use arms::Arm;
pub use report::{loss_at, reaches, summary, table, write_outputs};

use crate::jobs::request::{StackRequest, StackSelection, TrainRequest, TrainStart};
use crate::jobs::spawn::{self, Spec};
use crate::runs::run_dir::{RunDir, RunState};
use crate::stack::results::StackReport;
use crate::stack::{EvalOptions, StackSpec};

/// What to heal and how.
#[derive(Debug, Clone)]
pub struct HealOptions {
    pub spec: StackSpec,
    pub eval: EvalOptions,
    /// Training steps of every arm.
    pub steps: i64,
    /// The recipe (a config file or name); default: the first part's own config.
    pub config: Option<String>,
    /// `--set` overrides, applied to the recipe before the heal's own settings.
    pub sets: Vec<String>,
    pub arms: Vec<Arm>,
    pub train_w: bool,
    /// The heal's name: its arms are the runs `<name>-<arm>`.
    pub name: String,
    /// The heal's folder (starting checkpoints, configs, logs, outputs).
    pub out: PathBuf,
    pub device: String,
    /// Where the arms' runs live; default: the checkpoint dir.
    pub runs_root: Option<PathBuf>,
}

impl HealOptions {
    /// The folder of the arms' runs.
    pub fn runs_root(&self) -> PathBuf {
        self.runs_root
            .clone()
            .unwrap_or_else(crate::paths::checkpoint_dir)
    }
}

/// One validation of an arm's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: i64,
    pub tokens: i64,
    pub val_loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmCurve {
    /// `stack`, `self`, `scratch` or `continue`.
    pub arm: String,
    /// The run in the checkpoint dir.
    pub run: String,
    pub points: Vec<CurvePoint>,
}

/// A part's own loss (a horizontal reference on the figure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartLoss {
    pub model: String,
    pub val_loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealReport {
    pub name: String,
    pub steps: i64,
    /// The stack as `stack` scores it, before any training.
    pub block_list: String,
    pub val_loss_stack: f64,
    pub parts: Vec<PartLoss>,
    /// The best part's own loss: what the stack has to reach.
    pub best_part_loss: f64,
    pub arms: Vec<ArmCurve>,
}

/// Runs `stacklab stack` on a spec in a child (saving it as a checkpoint when `save` is
/// given and not there yet) and returns its report.
fn score_stack(o: &HealOptions, spec: &StackSpec, save: Option<&Path>) -> Result<StackReport> {
    let req = StackRequest {
        selection: StackSelection::of(spec.clone(), o.eval.clone(), &o.device),
        results: None,
        save: save.filter(|d| !d.exists()).map(Path::to_path_buf),
        no_cache: false,
    };
    let log = o.out.join("logs").join("stacks.log");
    let exe = spawn::stacklab_exe()?;
    let out = spawn::run_for_output(
        &Spec {
            program: &exe,
            args: &req.to_args(),
            env: &[],
        },
        &log,
    )?;
    if spawn::interrupted(&out.status) {
        bail!("interrupted; run the same heal again to resume");
    }
    if !out.status.success() {
        bail!(
            "scoring the stack {} failed (see {})",
            spec.models.join(" | "),
            log.display()
        );
    }
    crate::jobs::decode_report(&String::from_utf8_lossy(&out.stdout), "stack")
}

/// Trains (or resumes, or reuses) one arm's run as a child `stacklab train`.
fn train_arm(o: &HealOptions, run: &str, config: &Path) -> Result<()> {
    let dir = o.runs_root().join(run);
    let start = if RunDir::is_run_dir(&dir) {
        let rd = RunDir::new(&dir);
        let existing = crate::config::TrainConfig::load(&rd.config_path(), &[])?;
        let wanted = crate::config::TrainConfig::load(config, &[])?;
        if existing != wanted {
            bail!(
                "run {} exists with another config than this heal gives it: remove it, or give the heal another --name",
                dir.display()
            );
        }
        if rd.read_status()?.state == RunState::Done {
            return Ok(());
        }
        TrainStart::Resume(dir.clone())
    } else if dir.exists() {
        bail!("{} exists but is not a run folder", dir.display());
    } else {
        TrainStart::New {
            config: config.display().to_string(),
            name: Some(run.to_string()),
            sets: vec![],
        }
    };
    let req = TrainRequest {
        start,
        stop_after: None,
        device: o.device.clone(),
        checkpoint_dir: o.runs_root.clone(),
        nproc: None,
    };
    let log = o.out.join("logs").join(format!("{run}.log"));
    crate::jobs::run_training(&req, run, &log, "heal")
}

/// An arm's curve: its run's validation rows.
fn curve(o: &HealOptions, arm: Arm, run: &str) -> Result<ArmCurve> {
    let rd = RunDir::new(o.runs_root().join(run));
    let points = rd
        .read_metrics()
        .with_context(|| format!("cannot read the metrics of {run}"))?
        .into_iter()
        .filter_map(|m| {
            m.val_loss.map(|v| CurvePoint {
                step: m.step,
                tokens: m.tokens_seen,
                val_loss: v,
            })
        })
        .collect();
    Ok(ArmCurve {
        arm: arm.as_str().to_string(),
        run: run.to_string(),
        points,
    })
}

/// What is wrong with K steps and these arms, if anything: `(setting, why)`.
pub fn check_settings<T>(steps: i64, arms: &[T]) -> Option<(&'static str, String)> {
    if steps < 4 || steps % 4 != 0 {
        return Some((
            "steps",
            format!("{steps}: give a multiple of 4 (the table reads the loss at K/4, K/2 and K)"),
        ));
    }
    arms.is_empty().then(|| {
        (
            "arms",
            "(none): give at least one of stack, self, scratch, continue".to_string(),
        )
    })
}

/// Prepares, trains and reads every arm.
pub fn run(o: &HealOptions) -> Result<HealReport> {
    if let Some((key, why)) = check_settings(o.steps, &o.arms) {
        bail!("--{key} {why}");
    }
    crate::runs::run_dir::check_run_name(&o.name).context("--name")?;
    for d in ["init", "configs", "logs"] {
        std::fs::create_dir_all(o.out.join(d))
            .with_context(|| format!("cannot create {}", o.out.join(d).display()))?;
    }
    let _lock = crate::filelock::try_exclusive(
        &o.out.join(".heal.lock"),
        &format!("the heal folder {}", o.out.display()),
    )?;
    let wants = |a: Arm| o.arms.contains(&a);
    let stack_init = o.out.join("init").join("stack");
    let stack = score_stack(
        o,
        &o.spec,
        wants(Arm::Stack).then_some(stack_init.as_path()),
    )?;
    let plan = arms::Plan::new(o, &stack)?;
    let mut curves = Vec::new();
    for &arm in &o.arms {
        let (run, config) = plan.prepare(arm)?;
        eprintln!(
            "heal {}: training arm {} as run {run}",
            o.name,
            arm.as_str()
        );
        train_arm(o, &run, &config)?;
        curves.push(curve(o, arm, &run)?);
    }
    let parts: Vec<PartLoss> = stack
        .models
        .iter()
        .map(|m| PartLoss {
            model: m.name.clone(),
            val_loss: m.val_loss,
        })
        .collect();
    Ok(HealReport {
        name: o.name.clone(),
        steps: o.steps,
        block_list: stack.block_list.clone(),
        val_loss_stack: stack.val_loss_stack,
        best_part_loss: parts
            .iter()
            .map(|p| p.val_loss)
            .fold(f64::INFINITY, f64::min),
        parts,
        arms: curves,
    })
}
