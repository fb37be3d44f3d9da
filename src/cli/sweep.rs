//! `stacklab sweep`: plan, train what is missing, evaluate the stack grid, write the tables;
//! `--dry-run` prints the plan and writes nothing; `--report` rewrites the tables of an
//! existing results CSV (stacklab's, or the seed's raw rows).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::sweep::config::SweepConfig;
use crate::sweep::plan::{estimate_seconds, plan, RunAction, RESULTS};

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The sweep config (e.g. configs/sweep-tiny.toml, or a name in the config dir).
    #[arg(long, required_unless_present = "report")]
    pub config: Option<String>,
    /// The sweep's folder (results.csv, tables.md, configs/, logs/); default sweeps/<name>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the plan (runs to train, stacks to evaluate, an estimated time) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rewrite tables.md from DIR/results.csv (or from a CSV file, also the seed's raw rows).
    #[arg(long, value_name = "DIR|CSV", conflicts_with_all = ["config", "dry_run", "out"])]
    pub report: Option<PathBuf>,
    /// Device slots to run jobs on at once, comma-separated (e.g. cuda:0,cuda:1 or cpu,cpu):
    /// independent trainings, stack evaluations and heals run in parallel, one per slot,
    /// each after what it reads. Default: every GPU, or cpu (or --device when given).
    #[arg(long, value_name = "LIST", conflicts_with = "report")]
    pub devices: Option<String>,
    #[command(flatten)]
    pub device: super::DeviceArg,
}

impl SweepArgs {
    /// The device slots: `--devices`, else `--device` alone, else every GPU or the CPU.
    fn slots(&self) -> Result<Vec<String>> {
        match (&self.devices, self.device.device.as_str()) {
            (Some(list), "auto") => {
                crate::device::slots::parse_device_list(list).context("--devices")
            }
            (Some(_), d) => bail!("--devices and --device {d}: give one of them"),
            (None, "auto") => Ok(crate::device::slots::every_device()),
            (None, _) => Ok(vec![crate::device::name(self.device.resolve()?)]),
        }
    }
}

pub fn run(a: SweepArgs) -> Result<()> {
    if let Some(p) = &a.report {
        return report(p);
    }
    let name = a
        .config
        .as_deref()
        .expect("clap requires --config without --report");
    let path = crate::config::resolve_config_path(name)?;
    let cfg = SweepConfig::load(&path)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("sweeps").join(&cfg.name));
    let slots = a.slots()?;
    let device = crate::device::parse_device(&slots[0])?;
    // One sweep per folder: a second one on the same --out would train the same runs and
    // rewrite the same results.csv. Held from planning to the end (a dry run only reads).
    let _lock = if a.dry_run {
        None
    } else {
        Some(crate::filelock::try_exclusive(
            &out.join(".sweep.lock"),
            &format!("the sweep folder {}", out.display()),
        )?)
    };
    let p = plan(&cfg, &out, &crate::paths::checkpoint_dir())?;
    crate::sweep::run::check_slots(&p, &cfg, &slots)?;
    if a.dry_run {
        print_plan(&p, &cfg, &out, device, &slots);
        return Ok(());
    }
    // Ctrl-C reaches the child too: it finishes its step and checkpoints; the sweep stops
    // after it, and the same command resumes.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let result = crate::sweep::run::execute(&p, &cfg, &slots);
    if stop.load(Ordering::SeqCst) {
        bail!("sweep interrupted; run the same command again to resume");
    }
    let md = result?;
    print!("{md}");
    eprintln!("results in {}", out.join(RESULTS).display());
    Ok(())
}

/// `--report DIR|CSV`: the tables rewritten from a results file (stacklab's or the seed's).
fn report(p: &std::path::Path) -> Result<()> {
    let (csv, dir) = if p.is_dir() {
        (p.join(RESULTS), p.to_path_buf())
    } else {
        (
            p.to_path_buf(),
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".")),
        )
    };
    if !csv.is_file() {
        bail!(
            "--report {}: no results CSV at {}",
            p.display(),
            csv.display()
        );
    }
    print!("{}", crate::sweep::run::write_tables(&csv, &dir)?);
    eprintln!("wrote {}", dir.join(crate::sweep::plan::TABLES).display());
    Ok(())
}

/// `--dry-run`: the runs to train and the stacks to evaluate, and an estimated time.
fn print_plan(
    p: &crate::sweep::plan::Plan,
    cfg: &SweepConfig,
    out: &std::path::Path,
    device: tch::Device,
    slots: &[String],
) {
    let count = |act: RunAction| p.runs.iter().filter(|r| r.action == act).count();
    let todo = p.stacks.iter().filter(|s| !s.done).count();
    println!(
        "sweep `{}` into {}: {} runs to train ({} new, {} to resume, {} finished and reused), {} stacks to evaluate ({} already in {})",
        cfg.name,
        out.display(),
        count(RunAction::Train) + count(RunAction::Resume),
        count(RunAction::Train),
        count(RunAction::Resume),
        count(RunAction::Reuse),
        todo,
        p.stacks.len() - todo,
        RESULTS
    );
    for r in &p.runs {
        println!(
            "  run   {:<8} {} (model {}, seed {}, {} steps)",
            match r.action {
                RunAction::Train => "train",
                RunAction::Resume => "resume",
                RunAction::Reuse => "reuse",
            },
            r.dir.display(),
            r.model,
            r.seed,
            r.config.schedule.steps
        );
    }
    for s in &p.stacks {
        println!(
            "  stack {:<8} {}",
            if s.done { "done" } else { "eval" },
            s.describe()
        );
    }
    for h in &p.heals {
        let state = match h.resolve(cfg, out) {
            Some(r) if r.done => format!("done     {}", r.dir.display()),
            Some(r) => format!("train    {}", r.dir.display()),
            None => "pending  (after its parts are trained)".to_string(),
        };
        println!("  heal  {state}: {}", h.stack.describe());
    }
    for m in &p.missing {
        println!("  missing: {m}");
    }
    let one = estimate_seconds(p, cfg, device.is_cuda());
    if slots.len() > 1 {
        println!(
            "estimated time: {} on one {}, at best {} on {} slots ({}) (a rough estimate from model FLOPs)",
            crate::train::format_duration(one),
            crate::device::name(device),
            crate::train::format_duration(one / slots.len() as f64),
            slots.len(),
            slots.join(",")
        );
    } else {
        println!(
            "estimated time: {} on {} (a rough estimate from model FLOPs)",
            crate::train::format_duration(one),
            crate::device::name(device)
        );
    }
}
