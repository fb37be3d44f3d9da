//! The stacks a sweep evaluates: every point of its grids once and each spec file, each
//! marked done when `results.csv` holds a current row for it (the same checkpoints, by
//! their weights' SHA-256, trained with the same configs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{absolute, config_hash, short_hash, PlannedRun, PlannedStack, RunAction};
use crate::sweep::config::{NormSetting, SweepConfig};

/// The weights' SHA-256 of each model a stack would read now (a run folder's latest
/// checkpoint), hashed once per folder; `None` where one cannot be resolved yet.
pub(super) struct Weights(pub(super) BTreeMap<PathBuf, Option<String>>);

impl Weights {
    fn of(&mut self, model: &Path) -> Option<String> {
        self.0
            .entry(model.to_path_buf())
            .or_insert_with(|| {
                crate::runs::CheckpointRef::resolve(&model.display().to_string())
                    .and_then(|c| c.sha256())
                    .ok()
            })
            .clone()
    }
}

/// Whether `rows` hold a current row for stack `id`: the same stack of the same checkpoints
/// (weights' SHA-256, in order) trained with the same configs (when the row records them).
fn has_row(
    rows: &[BTreeMap<String, String>],
    id: &str,
    shas: &[Option<String>],
    configs: &[String],
) -> bool {
    if shas.iter().any(Option::is_none) {
        return false;
    }
    let shas: Vec<&str> = shas.iter().map(|s| s.as_deref().unwrap_or("")).collect();
    let configs = configs.join(";");
    rows.iter().any(|r| {
        let get = |k: &str| r.get(k).map(String::as_str).unwrap_or("");
        get("stack_id") == id
            && get("sha256").split(';').collect::<Vec<_>>() == shas
            && (get("config_sha256").is_empty() || get("config_sha256") == configs)
    })
}

fn planned_run<'a>(runs: &'a [PlannedRun], r: usize, model: &str) -> &'a PlannedRun {
    runs.iter()
        .find(|x| x.replicate == r && x.model == model)
        .expect("validated model names")
}

/// One point of a grid: the models of a replicate, the layer flags and the norms.
struct GridPoint<'a> {
    r: usize,
    models: &'a [String],
    first: bool,
    last: bool,
    norms: NormSetting,
}

/// Every point of every grid (pairs and same-model stacks) once, in order.
pub(super) fn grid_stacks(
    cfg: &SweepConfig,
    runs: &[PlannedRun],
    done: &[BTreeMap<String, String>],
    weights: &mut Weights,
) -> Vec<PlannedStack> {
    let mut stacks: Vec<PlannedStack> = Vec::new();
    for g in cfg.all_grids() {
        let mut groups: Vec<Vec<String>> = g.pairs.clone();
        groups.extend(g.same_model.iter().map(|m| vec![m.clone(), m.clone()]));
        for r in 0..cfg.replicates() {
            for models in &groups {
                for &first in &g.use_first_layer {
                    for &last in &g.use_last_layer {
                        for &norms in &g.norms {
                            let point = GridPoint {
                                r,
                                models,
                                first,
                                last,
                                norms,
                            };
                            let id = grid_stack_id(cfg, &point);
                            if stacks.iter().any(|s| s.id == id) {
                                continue;
                            }
                            stacks.push(grid_stack(id, &point, runs, done, weights));
                        }
                    }
                }
            }
        }
    }
    stacks
}

fn grid_stack_id(cfg: &SweepConfig, p: &GridPoint) -> String {
    let (e, n) = (&cfg.eval, &p.norms);
    let key = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{:?}",
        p.r,
        p.models.join(","),
        p.first,
        p.last,
        n.norm_wte,
        n.norm_lm_head,
        n.norm_inter_model,
        e.data,
        e.tokens,
        e.seq_len,
        e.batch
    );
    short_hash(&key)
}

/// The stack of a grid point, done when a current row exists for it.
fn grid_stack(
    id: String,
    p: &GridPoint,
    runs: &[PlannedRun],
    done: &[BTreeMap<String, String>],
    weights: &mut Weights,
) -> PlannedStack {
    let parts: Vec<&PlannedRun> = p.models.iter().map(|m| planned_run(runs, p.r, m)).collect();
    let dirs: Vec<PathBuf> = parts.iter().map(|x| x.dir.clone()).collect();
    // A row counts only for the checkpoints it was computed from: a run trained again in
    // this sweep, or retrained since, is re-scored.
    let fresh = parts.iter().all(|x| x.action == RunAction::Reuse);
    let configs: Vec<String> = parts.iter().map(|x| config_hash(&x.config)).collect();
    let is_done = fresh && {
        let shas: Vec<Option<String>> = dirs.iter().map(|d| weights.of(d)).collect();
        has_row(done, &id, &shas, &configs)
    };
    PlannedStack {
        done: is_done,
        id,
        replicate: Some(p.r),
        models: p.models.to_vec(),
        dirs,
        use_first_layer: Some(p.first),
        use_last_layer: Some(p.last),
        norms: p.norms,
        spec: None,
    }
}

/// A stack for each spec file of the grids.
pub(super) fn spec_stacks(
    cfg: &SweepConfig,
    done: &[BTreeMap<String, String>],
    weights: &mut Weights,
) -> Result<Vec<PlannedStack>> {
    let e = &cfg.eval;
    let mut stacks = Vec::new();
    for spec in cfg.all_grids().iter().flat_map(|g| g.specs.iter()) {
        let text = std::fs::read_to_string(spec)
            .with_context(|| format!("grid.specs: cannot read {}", spec.display()))?;
        let id = short_hash(&format!("spec|{text}|{}|{}", e.data, e.tokens));
        let shas: Vec<Option<String>> = match crate::stack::StackSpec::load(spec) {
            Ok(sp) => sp.models.iter().map(|m| weights.of(Path::new(m))).collect(),
            Err(_) => vec![None],
        };
        stacks.push(PlannedStack {
            done: has_row(done, &id, &shas, &[]),
            id,
            replicate: None,
            models: Vec::new(),
            dirs: Vec::new(),
            use_first_layer: None,
            use_last_layer: None,
            norms: NormSetting::default(),
            spec: Some(absolute(spec)),
        });
    }
    Ok(stacks)
}
