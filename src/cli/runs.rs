//! `stacklab runs`, `stop`, `rm` and `gc`: the lab's run management, headless.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::runs::control;
use crate::runs::disk::format_size;
use crate::runs::listing::{self, RunFacts};
use crate::runs::lock;
use crate::runs::registry::{Phase, Registry, RunEntry};
use crate::runs::retention::{self, Lineages, Retention};

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// One JSON object (schema stacklab.runs/1) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The run: a name in the checkpoint dir, or a run folder.
    pub run: String,
    /// SIGKILL instead of SIGTERM: it ends at once, without checkpointing its current step.
    #[arg(long)]
    pub kill: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The run: a name in the checkpoint dir, or a run folder.
    pub run: String,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Say what would be removed and the space it would free; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the newest N checkpoints of each run, instead of its checkpoint_keep_last.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Also keep every step divisible by K, instead of its checkpoint_keep_every.
    #[arg(long, value_name = "K")]
    pub keep_every: Option<u32>,
    /// Only these runs (default: every run in the checkpoint dir).
    pub runs: Vec<String>,
}

fn root() -> std::path::PathBuf {
    crate::paths::checkpoint_dir()
}

pub fn run_runs(a: RunsArgs) -> Result<()> {
    let root = root();
    let (gpus, source) = crate::runs::gpu_use::gpu_sample(&root);
    let runs = listing::list(&root, gpus.as_deref().unwrap_or(&[]));
    if a.json {
        let out = serde_json::json!({
            "schema": listing::SCHEMA,
            "checkpoint_dir": root.display().to_string(),
            "gpu_source": source,
            "no_gpu_figures": gpus.as_ref().err().map(ToString::to_string),
            "runs": runs,
        });
        println!("{out}");
        return Ok(());
    }
    print!("{}", table(&root, &runs, gpus.is_ok()));
    Ok(())
}

/// The runs as the lab's table has them, with the device each trains on, its GPU memory
/// (when `gpu_figures`: NVML answered), a size column and, for unreadable folders, the
/// reason (last, unpadded).
pub fn table(root: &Path, runs: &[RunFacts], gpu_figures: bool) -> String {
    if runs.is_empty() {
        return format!("no runs in {}\n", root.display());
    }
    let mut head = vec![
        "run", "state", "step", "train", "val", "tok/s", "age", "size", "device",
    ];
    if gpu_figures {
        head.push("gpu mem");
    }
    head.push("");
    let mut rows: Vec<Vec<String>> = vec![head.into_iter().map(String::from).collect()];
    let dash = || "-".to_string();
    for r in runs {
        let step = if r.total_steps > 0 {
            format!("{}/{}", r.step, r.total_steps)
        } else {
            dash()
        };
        let mut row = vec![
            r.name.clone(),
            r.state.clone(),
            step,
            crate::tui::series::loss(r.train_loss),
            crate::tui::series::loss(r.val_loss),
            crate::tui::series::rate(r.tokens_per_s),
            r.age_s
                .map(crate::tui::widgets::run_table::age)
                .unwrap_or_else(dash),
            if r.path.is_empty() {
                dash()
            } else {
                format_size(r.size_bytes)
            },
            r.device
                .as_deref()
                .map(crate::tui::widgets::run_table::short_devices)
                .unwrap_or_else(dash),
        ];
        if gpu_figures {
            row.push(r.gpu_memory_bytes.map(format_size).unwrap_or_else(dash));
        }
        row.push(r.problem.clone().unwrap_or_default());
        rows.push(row);
    }
    let last = rows[0].len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let total: u64 = runs.iter().map(|r| r.size_bytes).sum();
    let mut out = format!("runs in {}\n", root.display());
    for r in &rows {
        let mut line = String::new();
        for (cell, w) in r.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        line.push_str(&r[last]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "{} run(s), {} on disk\n",
        runs.len(),
        format_size(total)
    ));
    out
}

pub fn run_stop(a: StopArgs) -> Result<()> {
    let (root, name) = control::locate(&root(), &a.run)?;
    let s = control::stop_run(&root, &name, a.kill)?;
    if !s.killed {
        println!(
            "stopping {name} (SIGTERM to pid {}): it finishes its step, writes a checkpoint and ends stopped",
            s.pid
        );
        return Ok(());
    }
    println!(
        "killed {name} (SIGKILL to pid {}): it ends without a checkpoint of its current step and shows as lost; resume it with `stacklab train --resume {}`",
        s.pid,
        root.join(&name).display()
    );
    // Its slot is free: the next queued run for its device starts, as when a training ends.
    if control::wait_gone(s.pid, std::time::Duration::from_secs(5)) {
        if let Some(d) = &s.device {
            crate::runs::launch::start_next(&root, d);
        }
    }
    Ok(())
}

pub fn run_rm(a: RmArgs) -> Result<()> {
    let (root, name) = control::locate(&root(), &a.run)?;
    let r = control::remove_run(&root, &name)?;
    println!(
        "removed {name} ({}, {} freed)",
        r.path.display(),
        format_size(r.bytes)
    );
    for n in &r.named_by {
        eprintln!("note: {n}: that lineage now names a removed checkpoint");
    }
    Ok(())
}

fn retention_for(a: &GcArgs, run: &Path) -> Result<Retention> {
    let mut r = Retention::of_run(run)?;
    if let Some(n) = a.keep_last {
        r.keep_last = n as i64;
    }
    if let Some(k) = a.keep_every {
        r.keep_every = k as i64;
    }
    if r.keeps_all() && r.keep_every > 0 {
        bail!(
            "--keep-every {}: keeps every {}-th step besides the newest N, and this run keeps every checkpoint (no checkpoint_keep_last): give --keep-last N too",
            r.keep_every,
            r.keep_every
        );
    }
    Ok(r)
}

pub fn run_gc(a: GcArgs) -> Result<()> {
    if let (Some(k @ 1..), Some(0)) = (a.keep_every, a.keep_last) {
        bail!("--keep-every {k} with --keep-last 0 (keep every checkpoint) has no effect: give --keep-last N, N at least 1");
    }
    let root = root();
    let report = gc(&root, &a)?;
    print!("{report}");
    Ok(())
}

/// Applies retention to the runs under `root` (or only `a.runs`) and clears leftovers of
/// interrupted writes and removals; returns the report. Running and unreadable runs are
/// left alone.
pub fn gc(root: &Path, a: &GcArgs) -> Result<String> {
    let mut reg = Registry::new(root);
    reg.refresh();
    for n in &a.runs {
        if reg.get(n).is_none() {
            bail!("no run `{n}` in {}", root.display());
        }
    }
    let lineages = Lineages::scan(root);
    let starting = crate::runs::launch::starting(root);
    let mut gc = Gc {
        a,
        verb: if a.dry_run { "would remove" } else { "removed" },
        out: String::new(),
        freed: 0,
        count: 0,
        runs: 0,
    };
    let mut leftovers = retention::leftovers(root);
    for e in reg.runs.values() {
        if !a.runs.is_empty() && !a.runs.contains(&e.name) {
            continue;
        }
        let starts = starting.iter().any(|s| s.name == e.name);
        if gc.may_touch(e, starts) {
            gc.run(e, &lineages, &mut leftovers);
        }
    }
    gc.remove_leftovers(leftovers);
    Ok(gc.summary())
}

/// What `gc` has done so far: its report, and the bytes, checkpoints and runs it freed.
struct Gc<'a> {
    a: &'a GcArgs,
    /// "removed", or "would remove" in a dry run.
    verb: &'static str,
    out: String,
    freed: u64,
    count: usize,
    runs: usize,
}

impl Gc<'_> {
    fn say(&mut self, line: String) {
        self.out.push_str(&line);
        self.out.push('\n');
    }

    /// Whether `e` can be collected: a run that trains (or is starting) applies its own
    /// retention, and an unreadable one is left alone.
    fn may_touch(&mut self, e: &RunEntry, starting: bool) -> bool {
        let phase = e.phase();
        if phase.is_active() || starting {
            self.say(format!(
                "{}: running, left alone (its training applies its own retention)",
                e.name
            ));
            return false;
        }
        if phase == Phase::Corrupt {
            self.say(format!(
                "{}: not a readable run, left alone ({})",
                e.name,
                e.problem.clone().unwrap_or_default()
            ));
            return false;
        }
        true
    }

    /// Applies the retention of run `e` (its lock held, so no resume starts on it
    /// meanwhile); the run's leftovers join `leftovers`.
    fn run(&mut self, e: &RunEntry, lineages: &Lineages, leftovers: &mut Vec<PathBuf>) {
        let a = self.a;
        let _lock = if a.dry_run {
            None
        } else {
            match lock::acquire(&e.path, lock::GC, None) {
                Ok(l) => Some(l),
                Err(err) => return self.say(format!("{}: left alone: {err:#}", e.name)),
            }
        };
        leftovers.extend(retention::leftovers(&e.path));
        let r = match retention_for(a, &e.path) {
            Ok(r) => r,
            Err(err) => return self.say(format!("{}: left alone: {err:#}", e.name)),
        };
        let plan = retention::plan(&e.path, &r, lineages);
        for (ck, why) in &plan.kept_for_lineage {
            self.say(format!(
                "{}: kept {}: {why} names it",
                e.name,
                file_name(ck)
            ));
        }
        if plan.remove.is_empty() {
            return;
        }
        let names: Vec<String> = plan.remove.iter().map(|r| file_name(&r.path)).collect();
        let bytes = if a.dry_run {
            plan.bytes()
        } else {
            let (bytes, errors) = retention::apply(&plan);
            for err in errors {
                self.say(format!("{}: {err}", e.name));
            }
            bytes
        };
        self.say(format!(
            "{}: {}: {} {} ({})",
            e.name,
            r.describe(),
            self.verb,
            names.join(", "),
            format_size(bytes)
        ));
        self.freed += bytes;
        self.count += plan.remove.len();
        self.runs += 1;
    }

    /// Folders left by an interrupted write or removal.
    fn remove_leftovers(&mut self, leftovers: Vec<PathBuf>) {
        for l in leftovers {
            let bytes = crate::runs::disk::disk_size(&l);
            if !self.a.dry_run {
                if let Err(err) = std::fs::remove_dir_all(&l) {
                    self.say(format!("cannot remove {}: {err}", l.display()));
                    continue;
                }
            }
            self.say(format!(
                "{} {} (left by an interrupted write or removal)",
                self.verb,
                l.display()
            ));
            self.freed += bytes;
        }
    }

    fn summary(mut self) -> String {
        let (freed, count, runs) = (self.freed, self.count, self.runs);
        let summary = format!(
            "{} ({freed} bytes): {count} checkpoint(s) in {runs} run(s)",
            format_size(freed)
        );
        if count == 0 && freed == 0 {
            self.say("nothing to remove: a run keeps every checkpoint unless its checkpoint_keep_last (or --keep-last) says otherwise".into());
        } else if self.a.dry_run {
            self.say(format!(
                "dry run: would free {summary}; nothing was removed"
            ));
        } else {
            self.say(format!("freed {summary}"));
        }
        self.out
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
