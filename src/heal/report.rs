//! A heal's outputs: the table a person reads, `heal.json` (what `--json` prints),
//! `heal.csv` (a row per arm and validation) and `heal.svg` (loss against tokens, one line
//! per arm, the parts' own losses as horizontal references).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use super::{ArmCurve, HealReport};

/// The loss at the last validation at or before `step`.
pub fn loss_at(c: &ArmCurve, step: i64) -> Option<f64> {
    c.points
        .iter()
        .filter(|p| p.step <= step)
        .max_by_key(|p| p.step)
        .map(|p| p.val_loss)
}

/// The first validation step whose loss is at or below `target`.
pub fn reaches(c: &ArmCurve, target: f64) -> Option<i64> {
    c.points
        .iter()
        .find(|p| p.val_loss <= target)
        .map(|p| p.step)
}

/// One line: each arm's loss after K steps, and whether it reached the best part.
pub fn summary(r: &HealReport) -> String {
    let arms: Vec<String> = r
        .arms
        .iter()
        .map(|a| {
            let end = a.points.last().map(|p| p.val_loss).unwrap_or(f64::NAN);
            let reached = reaches(a, r.best_part_loss).map_or("", |_| " (reached)");
            format!("{} {end:.4}{reached}", a.arm)
        })
        .collect();
    format!(
        "heal {}: stack {:.4}, best part {:.4}; after {} steps: {}",
        r.name,
        r.val_loss_stack,
        r.best_part_loss,
        r.steps,
        arms.join(" · ")
    )
}

pub fn table(r: &HealReport) -> String {
    let k = r.steps;
    let mut s = format!(
        "heal {}: stack {} at {:.4}; best part {:.4} ({})\n\narm       run{}  step 0   K/4      K/2      K        reaches the best part\n",
        r.name,
        r.block_list,
        r.val_loss_stack,
        r.best_part_loss,
        r.parts
            .iter()
            .map(|p| format!("{} {:.4}", p.model, p.val_loss))
            .collect::<Vec<_>>()
            .join(", "),
        " ".repeat(r.arms.iter().map(|a| a.run.len()).max().unwrap_or(3).saturating_sub(3)),
    );
    let width = r.arms.iter().map(|a| a.run.len()).max().unwrap_or(3);
    for a in &r.arms {
        let at = |step: i64| {
            loss_at(a, step)
                .map(|v| format!("{v:<8.4}"))
                .unwrap_or_else(|| format!("{:<8}", "-"))
        };
        s.push_str(&format!(
            "{:<9} {:<width$}  {} {} {} {} {}\n",
            a.arm,
            a.run,
            at(0),
            at(k / 4),
            at(k / 2),
            at(k),
            reaches(a, r.best_part_loss)
                .map(|st| format!("step {st}"))
                .unwrap_or_else(|| "not reached".into())
        ));
    }
    s
}

fn csv_bytes(r: &HealReport) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["arm", "run", "step", "tokens", "val_loss"])?;
    for a in &r.arms {
        for p in &a.points {
            w.write_record([
                a.arm.clone(),
                a.run.clone(),
                p.step.to_string(),
                p.tokens.to_string(),
                p.val_loss.to_string(),
            ])?;
        }
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

const PALETTE: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn figure(r: &HealReport, path: &Path) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{}: {e}", path.display());
    let values: Vec<f64> = r
        .arms
        .iter()
        .flat_map(|a| a.points.iter().map(|p| p.val_loss))
        .chain(r.parts.iter().map(|p| p.val_loss))
        .filter(|v| v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo < hi {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let pad = (hi - lo) * 0.05;
    let max_tokens = r
        .arms
        .iter()
        .flat_map(|a| a.points.iter().map(|p| p.tokens))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("heal {}: val loss", r.name), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_tokens, lo - pad..hi + pad)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("tokens")
        .y_desc("val loss")
        .draw()
        .map_err(err)?;
    for (i, a) in r.arms.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                a.points.iter().map(|p| (p.tokens as f64, p.val_loss)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(a.arm.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
    }
    for p in &r.parts {
        chart
            .draw_series(LineSeries::new(
                [(0.0, p.val_loss), (max_tokens, p.val_loss)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("{} alone", p.model))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Writes `heal.json`, `heal.csv` and `heal.svg` into `dir`; returns their paths.
pub fn write_outputs(r: &HealReport, dir: &Path) -> Result<Vec<PathBuf>> {
    let json = dir.join("heal.json");
    crate::paths::write_atomic(&json, serde_json::to_string_pretty(r)?.as_bytes())?;
    let csv = dir.join("heal.csv");
    crate::paths::write_atomic(&csv, &csv_bytes(r)?)?;
    let svg = dir.join("heal.svg");
    let tmp = dir.join(".heal.svg.tmp");
    figure(r, &tmp)?;
    std::fs::rename(&tmp, &svg).with_context(|| format!("cannot write {}", svg.display()))?;
    Ok(vec![json, csv, svg])
}
