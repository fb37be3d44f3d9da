//! Carrying out a sweep's heals, `heal.csv` with a raw row per heal, arm and validation,
//! and the Healing table computed from those rows.

use std::path::Path;

use anyhow::{Context, Result};

use crate::heal::{Arm, ArmCurve, CurvePoint, HealOptions, HealReport};
use crate::sweep::config::{HealSection, SweepConfig};
use crate::sweep::plan::heals::{PlannedHeal, ResolvedHeal};
use crate::sweep::tables::{Rows, Stat};

/// The raw rows of a sweep's heals, beside `results.csv`.
pub const HEAL_ROWS: &str = "heal.csv";

/// The options that heal one resolved grid stack with the sweep's settings.
pub fn heal_options(
    ph: &PlannedHeal,
    r: &ResolvedHeal,
    cfg: &SweepConfig,
    runs_root: &Path,
    device: &str,
) -> Result<HealOptions> {
    let h: &HealSection = cfg.heal.as_ref().context("the sweep has no [heal]")?;
    let sel = super::row::stack_selection(&ph.stack, cfg, device)?;
    let arms = h
        .arms
        .iter()
        .map(|a| a.parse::<Arm>())
        .collect::<Result<Vec<_>>>()?;
    Ok(HealOptions {
        spec: sel.spec,
        eval: sel.eval,
        steps: h.steps,
        config: None,
        sets: h.set.clone(),
        arms,
        train_w: h.train_w,
        name: r.name.clone(),
        out: r.dir.clone(),
        device: device.to_string(),
        runs_root: Some(runs_root.to_path_buf()),
    })
}

/// Heals one grid stack: trains (or resumes, or reuses) its arms and writes its outputs.
pub fn run_heal(
    ph: &PlannedHeal,
    r: &ResolvedHeal,
    cfg: &SweepConfig,
    runs_root: &Path,
    device: &str,
) -> Result<HealReport> {
    let o = heal_options(ph, r, cfg, runs_root, device)?;
    let report = crate::heal::run(&o).with_context(|| format!("heal {}", r.name))?;
    crate::heal::write_outputs(&report, &r.dir)?;
    Ok(report)
}

/// The raw rows' columns: the grid point, then one validation of one arm.
const COLUMNS: [&str; 17] = [
    "heal",
    "replicate",
    "models",
    "use_first_layer",
    "use_last_layer",
    "norm_wte",
    "norm_lm_head",
    "norm_inter_model",
    "steps",
    "val_loss_stack",
    "best_part_loss",
    "arm",
    "run",
    "step",
    "tokens",
    "val_loss",
    "block_list",
];

/// Rewrites `heal.csv` from the finished heals' `heal.json` (the heals of this plan, in
/// order); returns how many heals it holds.
pub fn write_rows(heals: &[PlannedHeal], cfg: &SweepConfig, out: &Path) -> Result<usize> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    let mut n = 0;
    for ph in heals {
        let Some(r) = ph.resolve(cfg, out).filter(|r| r.done) else {
            continue;
        };
        let path = r.dir.join("heal.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let report: HealReport = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a heal report", path.display()))?;
        let s = &ph.stack;
        for a in &report.arms {
            for p in &a.points {
                w.write_record([
                    r.name.clone(),
                    s.replicate.unwrap_or(0).to_string(),
                    s.models.join(";"),
                    s.use_first_layer.unwrap_or(false).to_string(),
                    s.use_last_layer.unwrap_or(false).to_string(),
                    s.norms.norm_wte.to_string(),
                    s.norms.norm_lm_head.to_string(),
                    s.norms.norm_inter_model.to_string(),
                    report.steps.to_string(),
                    report.val_loss_stack.to_string(),
                    report.best_part_loss.to_string(),
                    a.arm.clone(),
                    a.run.clone(),
                    p.step.to_string(),
                    p.tokens.to_string(),
                    p.val_loss.to_string(),
                    report.block_list.clone(),
                ])?;
            }
        }
        n += 1;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::paths::write_atomic(&out.join(HEAL_ROWS), &bytes)?;
    Ok(n)
}

/// One arm of one heal, read back from the raw rows.
struct ArmRows {
    /// The cell: models, flags, norms, steps, arm.
    key: Vec<String>,
    curve: ArmCurve,
    best_part_loss: f64,
    steps: i64,
}

/// The columns that make a Healing cell: one stack definition and arm, over replicates.
const CELL: [&str; 8] = [
    "models",
    "use_first_layer",
    "use_last_layer",
    "norm_wte",
    "norm_lm_head",
    "norm_inter_model",
    "steps",
    "arm",
];

fn arms_of(rows: &Rows) -> Result<Vec<ArmRows>> {
    let mut arms: Vec<(String, ArmRows)> = Vec::new();
    for (i, row) in rows.rows.iter().enumerate() {
        let get = |k: &str| row.get(k).cloned().unwrap_or_default();
        let num = |k: &str| -> Result<f64> {
            get(k)
                .trim()
                .parse::<f64>()
                .with_context(|| format!("{HEAL_ROWS} row {}: `{k}` = {:?}", i + 2, get(k)))
        };
        let id = format!("{}|{}", get("heal"), get("arm"));
        let point = CurvePoint {
            step: num("step")? as i64,
            tokens: num("tokens")? as i64,
            val_loss: num("val_loss")?,
        };
        match arms.iter_mut().find(|(k, _)| *k == id) {
            Some((_, a)) => a.curve.points.push(point),
            None => arms.push((
                id,
                ArmRows {
                    key: CELL.iter().map(|k| get(k)).collect(),
                    curve: ArmCurve {
                        arm: get("arm"),
                        run: get("run"),
                        points: vec![point],
                    },
                    best_part_loss: num("best_part_loss")?,
                    steps: num("steps")? as i64,
                },
            )),
        }
    }
    Ok(arms.into_iter().map(|(_, a)| a).collect())
}

/// The Healing table from `heal.csv`: per stack definition and arm, the val loss at step
/// 0, K/4, K/2 and K (mean ± sd over the replicates) and how many replicates reached the
/// best part's own loss (with the mean step at which they did).
pub fn healing_table(csv: &Path, decimals: usize) -> Result<String> {
    let rows = Rows::read_csv(csv)?;
    crate::sweep::columns::require_columns(csv, &rows.columns, &COLUMNS)?;
    let arms = arms_of(&rows)?;
    let mut cells: Vec<(Vec<String>, Vec<&ArmRows>)> = Vec::new();
    for a in &arms {
        match cells.iter_mut().find(|(k, _)| *k == a.key) {
            Some((_, v)) => v.push(a),
            None => cells.push((a.key.clone(), vec![a])),
        }
    }
    let mut s = String::from(
        "## Healing\n\nEach arm trained K steps from its start on the same tokens; val loss at step 0, K/4, K/2 and K, mean ± sd over replicates; `reaches` counts the replicates whose arm got to the best part's own loss, and the mean step at which it did.\n\n",
    );
    s.push_str("| step 0 | K/4 | K/2 | K | reaches best part | models | use_first_layer | use_last_layer | norms w/h/i | K | arm | replicates |\n");
    s.push_str("|---:|---:|---:|---:|:---|:---|:---|:---|:---|:---|:---|:---|\n");
    for (key, group) in &cells {
        let steps = group[0].steps;
        let at = |q: i64| -> String {
            let v: Vec<f64> = group
                .iter()
                .filter_map(|a| crate::heal::loss_at(&a.curve, steps * q / 4))
                .collect();
            if v.len() < group.len() {
                return "-".into();
            }
            Stat::of(&v).show(decimals)
        };
        let reached: Vec<f64> = group
            .iter()
            .filter_map(|a| crate::heal::reaches(&a.curve, a.best_part_loss).map(|s| s as f64))
            .collect();
        let reaches = if reached.is_empty() {
            format!("0 of {}", group.len())
        } else {
            format!(
                "{} of {} (step {:.0})",
                reached.len(),
                group.len(),
                Stat::of(&reached).mean
            )
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {reaches} | {} | {} | {} | {}/{}/{} | {} | {} | {} |\n",
            at(0),
            at(1),
            at(2),
            at(4),
            key[0].replace(';', "+"),
            key[1],
            key[2],
            key[3],
            key[4],
            key[5],
            key[6],
            key[7],
            group.len()
        ));
    }
    s.push('\n');
    Ok(s)
}
