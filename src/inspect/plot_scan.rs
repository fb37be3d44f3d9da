//! `inspect --scan --plot DIR`: `scan.svg`, one heat map per scanned value (loss as is,
//! loss stitched, debiased CKA, angular distance, cosine, RMS ratio), exit point i of the
//! lower model down, entry point j of the upper across, every cell's value written in it.
//! The best cell by the panel's loss is ringed (the stitched loss's best on its panel, the
//! loss as is's on the others), and the seed's default cut (no `use_first_layer`, no
//! `use_last_layer`) is outlined. Darker is better: lower loss and distance, higher CKA and
//! cosine, RMS ratio nearer 1.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{ScanBest, ScanCell, ScanReport};

fn err<E: std::fmt::Debug>(what: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("cannot draw {}: {e:?}", what.display())
}

/// Which end of a panel's values is drawn darkest.
#[derive(Clone, Copy)]
enum Better {
    Low,
    High,
    NearOne,
}

/// White (worst) to dark blue (best), `t` in 0..=1.
fn shade(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |a: f64, b: f64| (a + (b - a) * t) as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

/// Each cell's goodness in 0..=1 within its panel.
fn goodness(values: &[f64], better: Better) -> Vec<f64> {
    let key: Vec<f64> = values
        .iter()
        .map(|&v| match better {
            Better::Low => -v,
            Better::High => v,
            Better::NearOne => -(v.max(1e-12).ln().abs()),
        })
        .collect();
    let finite = key.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    key.iter()
        .map(|&k| if hi > lo { (k - lo) / (hi - lo) } else { 1.0 })
        .collect()
}

struct Panel<'a> {
    title: &'a str,
    value: fn(&ScanCell) -> f64,
    better: Better,
    best: &'a ScanBest,
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &ScanReport,
    p: &Panel,
    path: &Path,
) -> Result<()> {
    let (na, nb) = (s.lower_blocks as f64, s.upper_blocks as f64);
    let mut chart = ChartBuilder::on(area)
        .caption(p.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(44)
        .build_cartesian_2d(-0.5f64..nb - 0.5, -(na + 0.5)..-0.5f64)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(s.upper_blocks)
        .y_labels(s.lower_blocks)
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_label_formatter(&|y| format!("{}", -(y.round() as i64)))
        .x_desc(format!("{} entry point j", s.upper))
        .y_desc(format!("{} exit point i", s.lower))
        .draw()
        .map_err(err(path))?;
    let values: Vec<f64> = s.cells.iter().map(p.value).collect();
    let good = goodness(&values, p.better);
    let centre = |c: &ScanCell| (c.entry as f64, -(c.exit as f64));
    chart
        .draw_series(s.cells.iter().zip(&good).map(|(c, &g)| {
            let (x, y) = centre(c);
            Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], shade(g).filled())
        }))
        .map_err(err(path))?;
    let label = Pos::new(HPos::Center, VPos::Center);
    chart
        .draw_series(
            s.cells
                .iter()
                .zip(values.iter().zip(&good))
                .map(|(c, (&v, &g))| {
                    let ink = if g > 0.6 { WHITE } else { BLACK };
                    Text::new(
                        format!("{v:.3}"),
                        centre(c),
                        ("sans-serif", 11).into_font().color(&ink).pos(label),
                    )
                }),
        )
        .map_err(err(path))?;
    if let Some([i, j]) = s.default_cut {
        let (x, y) = (j as f64, -(i as f64));
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - 0.47, y - 0.47), (x + 0.47, y + 0.47)],
                RGBColor(255, 127, 14).stroke_width(3),
            )))
            .map_err(err(path))?
            .label("seed's default cut")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], RGBColor(255, 127, 14)));
    }
    let (x, y) = (p.best.entry as f64, -(p.best.exit as f64));
    chart
        .draw_series(std::iter::once(Circle::new((x, y + 0.3), 5, RED.filled())))
        .map_err(err(path))?
        .label(format!(
            "best: exit {}, entry {}",
            p.best.exit, p.best.entry
        ))
        .legend(|(x, y)| Circle::new((x + 6, y), 5, RED.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err(path))?;
    Ok(())
}

/// Writes `scan.svg` into `dir` (created if needed; through a temporary file) and returns
/// its path.
pub fn write_scan_figures(s: &ScanReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = dir.join("scan.svg");
    let tmp = out.with_extension("svg.tmp");
    let panels = [
        Panel {
            title: "loss (as is)",
            value: |c| c.loss,
            better: Better::Low,
            best: &s.best,
        },
        Panel {
            title: "loss (least-squares stitch)",
            value: |c| c.loss_stitched,
            better: Better::Low,
            best: &s.best_stitched,
        },
        Panel {
            title: "debiased CKA",
            value: |c| c.cka_debiased,
            better: Better::High,
            best: &s.best,
        },
        Panel {
            title: "angular distance arccos(cos)/pi",
            value: |c| c.angular_distance,
            better: Better::Low,
            best: &s.best,
        },
        Panel {
            title: "mean cosine",
            value: |c| c.cos,
            better: Better::High,
            best: &s.best,
        },
        Panel {
            title: "RMS ratio (arrives / expected)",
            value: |c| c.rms_ratio,
            better: Better::NearOne,
            best: &s.best,
        },
    ];
    let side = (40 + 48 * s.upper_blocks.max(s.lower_blocks)).clamp(320, 640) as u32;
    {
        let root = SVGBackend::new(&tmp, (3 * side, 2 * side + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(err(&tmp))?;
        let (head, body) = root.split_vertically(40);
        head.titled(
            &format!(
                "scan: {}[0, i) + {}[j, {})",
                s.lower, s.upper, s.upper_blocks
            ),
            ("sans-serif", 20),
        )
        .map_err(err(&tmp))?;
        for (p, area) in panels.iter().zip(body.split_evenly((2, 3)).iter()) {
            panel(area, s, p, &tmp)?;
        }
        root.present().map_err(err(&tmp))?;
    }
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(vec![out])
}
