//! What a sweep will do: the runs to train (new, to resume, or finished and reused) and the
//! stacks to evaluate (those without a current row in `results.csv`: a row counts only for
//! the checkpoints and training configs it was computed from). Planning reads, never
//! writes, so `--dry-run` changes nothing on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::config::{NormSetting, SweepConfig, SweepModel};
use super::tables::{Rows, SUPERSEDED};
use crate::config::{resolve_config_path, TrainConfig};
use crate::runs::run_dir::{RunDir, RunState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAction {
    Train,
    Resume,
    Reuse,
}

#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub model: String,
    pub replicate: usize,
    pub seed: i64,
    pub name: String,
    pub dir: PathBuf,
    pub config: TrainConfig,
    pub action: RunAction,
    /// Processes its training runs in (device slots it takes at once).
    pub processes: usize,
}

#[derive(Debug, Clone)]
pub struct PlannedStack {
    pub id: String,
    pub replicate: Option<usize>,
    /// Model names bottom first (empty for a spec file).
    pub models: Vec<String>,
    pub dirs: Vec<PathBuf>,
    pub use_first_layer: Option<bool>,
    pub use_last_layer: Option<bool>,
    pub norms: NormSetting,
    pub spec: Option<PathBuf>,
    pub done: bool,
}

impl PlannedStack {
    pub fn describe(&self) -> String {
        match &self.spec {
            Some(p) => format!("spec {}", p.display()),
            None => format!(
                "r{} {} first={} last={} norms {}/{}/{}",
                self.replicate.unwrap_or(0),
                self.models.join("+"),
                self.use_first_layer.unwrap_or(false),
                self.use_last_layer.unwrap_or(false),
                self.norms.norm_wte,
                self.norms.norm_lm_head,
                self.norms.norm_inter_model
            ),
        }
    }
}

pub struct Plan {
    pub out: PathBuf,
    /// Where the sweep's runs (and its heals' arms) live.
    pub runs_root: PathBuf,
    pub runs: Vec<PlannedRun>,
    pub stacks: Vec<PlannedStack>,
    /// The grid stacks `[heal]` heals.
    pub heals: Vec<heals::PlannedHeal>,
    /// What the runs need that is not there yet (data), said before anything starts.
    pub missing: Vec<String>,
}

pub const RESULTS: &str = "results.csv";
pub const TABLES: &str = "tables.md";

pub(crate) fn short_hash(s: &str) -> String {
    crate::hash::sha256_hex(s.as_bytes())[..16].to_string()
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// A sweep's rows already in `results.csv` that still count (not superseded), by stack id.
pub fn current_rows(out: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    let p = out.join(RESULTS);
    let rows = match std::fs::metadata(&p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => Rows::read_csv(&p)?,
    };
    Ok(rows
        .rows
        .into_iter()
        .filter(|r| r.get(SUPERSEDED).map(String::as_str) != Some("true"))
        .collect())
}

/// SHA-256 of a training config as a sweep writes it: part of a row's identity, so a run
/// retrained with another config never reuses the old run's rows.
pub fn config_hash(c: &TrainConfig) -> String {
    short_hash(&c.to_toml_string())
}

pub mod heals;
mod stacks;

use stacks::{grid_stacks, spec_stacks, Weights};

pub fn plan(cfg: &SweepConfig, out: &Path, runs_root: &Path) -> Result<Plan> {
    let base = resolve_config_path(&cfg.train_config).context("train_config")?;
    let runs_root = absolute(runs_root);
    let mut runs: Vec<PlannedRun> = Vec::new();
    let mut missing = Vec::new();
    for r in 0..cfg.replicates() {
        for m in &cfg.models {
            let name = format!("{}-{}-r{r}", cfg.name, m.name);
            let dir = runs_root.join(&name);
            let config = run_config(cfg, &base, m, r, &runs)?;
            if config.batch.ranks % m.processes as i64 != 0 {
                bail!(
                    "`models.{}.processes` = {}: it must divide batch.ranks = {} (each process runs whole logical ranks)",
                    m.name,
                    m.processes,
                    config.batch.ranks
                );
            }
            note_missing_data(&config, &mut missing);
            runs.push(PlannedRun {
                model: m.name.clone(),
                replicate: r,
                seed: m.seeds[r],
                name,
                action: run_action(&dir, &config)?,
                dir,
                config,
                processes: m.processes,
            });
        }
    }
    let done = current_rows(out)?;
    let mut weights = Weights(BTreeMap::new());
    let mut stacks = grid_stacks(cfg, &runs, &done, &mut weights);
    stacks.extend(spec_stacks(cfg, &done, &mut weights)?);
    let heals = heals::heal_stacks(cfg, &stacks);
    Ok(Plan {
        out: out.to_path_buf(),
        runs_root,
        runs,
        stacks,
        heals,
        missing,
    })
}

/// The training config of model `m` in replicate `r`: the base config with the sweep's,
/// the model's and the replicate's settings (its seed, its parent's run folder).
fn run_config(
    cfg: &SweepConfig,
    base: &Path,
    m: &SweepModel,
    r: usize,
    runs: &[PlannedRun],
) -> Result<TrainConfig> {
    let mut set = cfg.set.clone();
    set.extend(m.set.iter().cloned());
    set.push(format!("seed={}", m.seeds[r]));
    if let Some(p) = &m.from_model {
        let parent = runs
            .iter()
            .find(|x| x.replicate == r && &x.model == p)
            .expect("validated: parents come first");
        set.push(format!("from_model=\"{}\"", parent.dir.display()));
    }
    TrainConfig::load(base, &set).with_context(|| format!("model `{}` of replicate {r}", m.name))
}

/// Adds a line to `missing` for each shard glob of `config` that matches nothing yet.
fn note_missing_data(config: &TrainConfig, missing: &mut Vec<String>) {
    if config.data.embedded {
        return;
    }
    for (key, glob) in [
        ("data.train", &config.data.train),
        ("data.val", &config.data.val),
    ] {
        if crate::data::expand_glob(glob).is_err() {
            let line = format!("{key} `{glob}` matches no shard files: get the data first (e.g. `stacklab data prepare`, or FineWeb shards into data/fineweb10B/)");
            if !missing.contains(&line) {
                missing.push(line);
            }
        }
    }
}

/// Train a run folder that is not there, reuse a finished one, resume another; one with
/// another config, or a folder that is not a run, is refused.
fn run_action(dir: &Path, config: &TrainConfig) -> Result<RunAction> {
    if RunDir::is_run_dir(dir) {
        let run = RunDir::new(dir);
        let existing = TrainConfig::load(&run.config_path(), &[])?;
        if &existing != config {
            bail!(
                "run {} exists with another config than this sweep gives it: remove it, or give the sweep another name",
                dir.display()
            );
        }
        Ok(match run.read_status()?.state {
            RunState::Done => RunAction::Reuse,
            _ => RunAction::Resume,
        })
    } else if dir.exists() {
        bail!("{} exists but is not a run folder", dir.display());
    } else {
        Ok(RunAction::Train)
    }
}

fn params(c: &TrainConfig) -> f64 {
    let m = &c.model;
    (m.vocab_size * m.n_embd + m.n_layer * 12 * m.n_embd * m.n_embd) as f64
}

/// Training FLOPs of a run.
pub fn train_flops(c: &TrainConfig) -> f64 {
    6.0 * params(c) * (c.schedule.steps * c.tokens_per_step()) as f64
}

/// Evaluation FLOPs of one stack: the stack and its parts, about three models' forward
/// passes over the evaluation tokens.
pub fn stack_flops(plan: &Plan, cfg: &SweepConfig) -> f64 {
    let Some(first) = plan.runs.first() else {
        return 0.0;
    };
    let c = &first.config;
    let tokens = if cfg.eval.tokens > 0 {
        cfg.eval.tokens
    } else {
        c.eval.val_tokens
    } as f64;
    3.0 * 2.0 * params(c) * tokens
}

/// Training FLOPs of one heal: each arm trains a model about as deep as the stack (two
/// parts) for K steps.
pub fn heal_flops(plan: &Plan, cfg: &SweepConfig) -> f64 {
    match (plan.runs.first(), &cfg.heal) {
        (Some(first), Some(h)) => {
            let c = &first.config;
            let per_arm = 6.0 * 2.0 * params(c) * (h.steps * c.tokens_per_step()) as f64;
            h.arms.len() as f64 * per_arm
        }
        _ => 0.0,
    }
}

/// Training FLOPs of the runs, evaluation FLOPs of the stacks and the heals' training, for
/// a rough time estimate on one device.
pub fn estimate_seconds(plan: &Plan, cfg: &SweepConfig, cuda: bool) -> f64 {
    let rate = if cuda { 2.0e14 } else { 8.0e10 };
    let mut flops: f64 = plan
        .runs
        .iter()
        .filter(|r| r.action != RunAction::Reuse)
        .map(|r| train_flops(&r.config))
        .sum();
    let todo = plan.stacks.iter().filter(|s| !s.done).count() as f64;
    flops += todo * stack_flops(plan, cfg);
    flops += plan.heals.len() as f64 * heal_flops(plan, cfg);
    flops / rate
}
