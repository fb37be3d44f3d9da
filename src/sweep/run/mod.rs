//! Carrying out a sweep's plan: each run trained (or resumed) as a child `stacklab train`,
//! each stack evaluated as a child `stacklab stack --json`, one raw row appended to
//! `results.csv` per stack, each heal run, and the tables rewritten from those files. Jobs
//! run in parallel on the device slots of `--devices`, each after what it reads. An
//! interrupted sweep resumes: finished runs are reused and rows already written are not
//! recomputed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::config::SweepConfig;
use super::plan::heals::PlannedHeal;
use super::plan::{
    heal_flops, stack_flops, train_flops, Plan, PlannedRun, PlannedStack, RunAction, RESULTS,
    TABLES,
};
use super::tables::{standard_tables, to_markdown, Rows};
use crate::jobs::request::{TrainRequest, TrainStart};
use display::Display;
use row::{append_row, stack_row};
use schedule::Job;

mod display;
mod heal;
mod row;
pub mod schedule;

/// A row per finished job: which device slot ran it, when, and how it ended.
pub const JOBS: &str = "jobs.jsonl";

/// The device a training in `slots` gets and its process count: one slot is that device;
/// several CPU slots are `cpu` in that many processes; several GPUs are `cuda:0,cuda:2`
/// (process k trains on the k-th).
fn placement(slots: &[String]) -> (String, Option<usize>) {
    match slots {
        [] => ("cpu".into(), None),
        [one] => (one.clone(), None),
        _ if slots.iter().all(|s| s == "cpu") => ("cpu".into(), Some(slots.len())),
        _ => (slots.join(","), Some(slots.len())),
    }
}

fn train_run(r: &PlannedRun, out: &Path, slots: &[String]) -> Result<()> {
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
    let (device, nproc) = placement(slots);
    let req = TrainRequest {
        start,
        stop_after: None,
        device,
        checkpoint_dir: Some(
            r.dir
                .parent()
                .expect("a run dir has a parent")
                .to_path_buf(),
        ),
        nproc,
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
    let mut md = format!(
        "# Results ({current} rows of {})\n\n{}",
        csv.display(),
        to_markdown(&standard_tables(&rows)?, decimals)
    );
    let heals = out_dir.join(heal::HEAL_ROWS);
    if heals.is_file() {
        md.push_str(&heal::healing_table(&heals, decimals)?);
    }
    crate::paths::write_atomic(&out_dir.join(TABLES), md.as_bytes())?;
    Ok(md)
}

/// What one job of the sweep does.
enum Work<'p> {
    Train(&'p PlannedRun),
    Stack(&'p PlannedStack),
    Heal(&'p PlannedHeal),
}

/// The jobs still to do, in the plan's order (runs, stacks, heals), each depending on the
/// trainings of the runs it reads: a model's `from_model` parent, a stack's or a heal's
/// parts.
fn job_graph<'p>(plan: &'p Plan, cfg: &SweepConfig) -> (Vec<Job>, Vec<Work<'p>>) {
    let mut jobs = Vec::new();
    let mut works = Vec::new();
    // The job that trains the run in `dir`, if this sweep trains it.
    let mut trains: Vec<(&Path, usize)> = Vec::new();
    let deps_on = |trains: &[(&Path, usize)], dirs: &[&Path]| -> Vec<usize> {
        let mut d: Vec<usize> = trains
            .iter()
            .filter(|(run, _)| dirs.iter().any(|p| p.starts_with(run)))
            .map(|&(_, j)| j)
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    for r in plan.runs.iter().filter(|r| r.action != RunAction::Reuse) {
        let parent = PathBuf::from(&r.config.from_model);
        let deps = deps_on(&trains, &[parent.as_path()]);
        trains.push((&r.dir, jobs.len()));
        jobs.push(Job {
            label: format!("train {}", r.name),
            deps,
            weight: train_flops(&r.config),
            width: r.processes,
        });
        works.push(Work::Train(r));
    }
    for s in plan.stacks.iter().filter(|s| !s.done) {
        let mut dirs: Vec<PathBuf> = s.dirs.clone();
        if let Some(spec) = s
            .spec
            .as_ref()
            .and_then(|p| crate::stack::StackSpec::load(p).ok())
        {
            dirs.extend(spec.models.iter().map(PathBuf::from));
        }
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        jobs.push(Job {
            label: format!("stack {}", s.describe()),
            deps: deps_on(&trains, &dirs),
            weight: stack_flops(plan, cfg),
            width: 1,
        });
        works.push(Work::Stack(s));
    }
    for h in &plan.heals {
        if h.resolve(cfg, &plan.out).is_some_and(|r| r.done) {
            continue;
        }
        let dirs: Vec<&Path> = h.stack.dirs.iter().map(PathBuf::as_path).collect();
        jobs.push(Job {
            label: h.describe(),
            deps: deps_on(&trains, &dirs),
            weight: heal_flops(plan, cfg),
            width: 1,
        });
        works.push(Work::Heal(h));
    }
    (jobs, works)
}

/// Carries out one job on `device`; returns the line to show.
fn do_work(w: &Work, plan: &Plan, cfg: &SweepConfig, slots: &[String]) -> Result<String> {
    let device = slots.first().map(String::as_str).unwrap_or("cpu");
    match w {
        Work::Train(r) => {
            train_run(r, &plan.out, slots)?;
            Ok(format!("trained {}", r.name))
        }
        Work::Stack(s) => {
            let row = stack_row(s, cfg, plan, device)?;
            // Rows of this stack from other checkpoints are kept, marked superseded.
            append_row(&plan.out.join(RESULTS), &row)?;
            Ok(format!(
                "{}: val_loss_stack {}",
                s.describe(),
                row.val_loss_stack
            ))
        }
        Work::Heal(h) => {
            let r = h
                .resolve(cfg, &plan.out)
                .with_context(|| format!("{}: a part has no checkpoint", h.describe()))?;
            if r.done {
                return Ok(format!("{}: done already", h.describe()));
            }
            let report = heal::run_heal(h, &r, cfg, &plan.runs_root, device)?;
            Ok(crate::heal::summary(&report))
        }
    }
}

/// Refuses, before anything starts (a dry run too), a plan that cannot run on `devices`:
/// a training in more processes than the slots can hold at once.
pub fn check_slots(plan: &Plan, cfg: &SweepConfig, devices: &[String]) -> Result<()> {
    schedule::check(&job_graph(plan, cfg).0, devices)
}

/// Trains what is missing, evaluates what is not in `results.csv` and heals what `[heal]`
/// asks for, on the device slots `devices` (one job per slot at a time, dependencies
/// first), then writes the tables.
pub fn execute(plan: &Plan, cfg: &SweepConfig, devices: &[String]) -> Result<String> {
    if !plan.missing.is_empty() {
        bail!("the sweep cannot start:\n  {}", plan.missing.join("\n  "));
    }
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("cannot create {}", plan.out.display()))?;
    let (jobs, works) = job_graph(plan, cfg);
    let mut display = Display::new(&jobs, devices, plan.out.join(JOBS));
    let result = schedule::run(
        &jobs,
        devices,
        |j, slots| do_work(&works[j], plan, cfg, slots),
        |e| display.observe(e),
    );
    display.finish();
    result?;
    if !plan.heals.is_empty() {
        heal::write_rows(&plan.heals, cfg, &plan.out)?;
    }
    write_tables(&plan.out.join(RESULTS), &plan.out)
}

#[cfg(test)]
mod tests {
    use super::placement;

    #[test]
    fn a_training_on_several_slots_is_one_device_list_in_that_many_processes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(placement(&s(&["cuda:1"])), ("cuda:1".into(), None));
        assert_eq!(placement(&s(&["cpu", "cpu"])), ("cpu".into(), Some(2)));
        assert_eq!(
            placement(&s(&["cuda:0", "cuda:2"])),
            ("cuda:0,cuda:2".into(), Some(2))
        );
    }
}
