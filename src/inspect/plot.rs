//! `inspect --plot DIR`: the report as SVG figures for a write-up. Every figure is drawn
//! from an [`InspectReport`], so the lab and scripts can redraw them from `--json` output.
//!
//! - `norm_heatmap.svg`: per-layer residual-norm histograms (layer x log10 RMS, counts
//!   normalised per layer), the stack and each model alone side by side, seams marked;
//! - `rms.svg`: median RMS per layer (thin lines: p05 and p95), log axis, one series per
//!   model;
//! - `lens.svg` and `lens_kl.svg`: logit-lens loss and KL(final || point) per layer, one
//!   series per model;
//! - `cka.svg`: each seam's CKA matrix (lower part's points x upper model's points).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::{InspectReport, PointReport};

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// The series every line figure draws: the stack, then each model alone.
fn series(r: &InspectReport) -> Vec<(String, &[PointReport])> {
    let mut v = vec![("stack".to_string(), r.points.as_slice())];
    for p in &r.parts {
        v.push((format!("{} alone", p.model), p.points.as_slice()));
    }
    v
}

fn err<E: std::fmt::Debug>(what: &Path) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("cannot draw {}: {e:?}", what.display())
}

fn heat(v: f64) -> RGBColor {
    // White to dark blue.
    let v = v.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * v) as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

fn norm_heatmap(r: &InspectReport, path: &Path) -> Result<()> {
    let s = series(r);
    let root = SVGBackend::new(path, (360 * s.len() as u32, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let panels = root.split_evenly((1, s.len()));
    let edges = &r.hist_edges_log10;
    let (lo, hi) = (edges[0], edges[edges.len() - 1]);
    for ((name, points), area) in s.iter().zip(panels.iter()) {
        let layers = points.len() as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{name}: residual RMS"), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..layers, lo..hi)
            .map_err(err(path))?;
        chart
            .configure_mesh()
            .x_desc("point r")
            .y_desc("log10 RMS")
            .disable_mesh()
            .draw()
            .map_err(err(path))?;
        for (x, p) in points.iter().enumerate() {
            let max = p.hist.iter().copied().max().unwrap_or(1).max(1) as f64;
            chart
                .draw_series(p.hist.iter().enumerate().map(|(b, &c)| {
                    Rectangle::new(
                        [(x as f64, edges[b]), (x as f64 + 1.0, edges[b + 1])],
                        heat(c as f64 / max).filled(),
                    )
                }))
                .map_err(err(path))?;
        }
        if name == "stack" {
            for seam in &r.seams {
                let x = seam.after_block as f64 + 0.5;
                chart
                    .draw_series(LineSeries::new(vec![(x, lo), (x, hi)], RED.stroke_width(2)))
                    .map_err(err(path))?
                    .label(format!("seam after block {}", seam.after_block))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
            }
            if !r.seams.is_empty() {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(err(path))?;
            }
        }
    }
    root.present().map_err(err(path))?;
    Ok(())
}

/// The low and high values drawn thin around a line (e.g. p05 and p95).
type Band = fn(&PointReport) -> (f64, f64);

/// A line figure: `value` per point for every series, on a log axis when `log`.
fn lines(
    r: &InspectReport,
    path: &Path,
    title: &str,
    y_desc: &str,
    log: bool,
    value: impl Fn(&PointReport) -> f64,
    band: Option<Band>,
) -> Result<()> {
    let fig = LineFigure {
        r,
        series: series(r),
        y_desc,
        log,
        value,
        band,
    };
    let (lo, hi) = fig.value_range();
    let max_points = fig.series.iter().map(|(_, p)| p.len()).max().unwrap_or(1) as f64;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60);
    if log {
        let chart = builder
            .build_cartesian_2d(0f64..max_points, (lo * 0.9..hi * 1.1).log_scale())
            .map_err(err(path))?;
        fig.draw(chart, path, (lo * 0.9, hi * 1.1))?;
    } else {
        let pad = (hi - lo) * 0.05;
        let chart = builder
            .build_cartesian_2d(0f64..max_points, lo - pad..hi + pad)
            .map_err(err(path))?;
        fig.draw(chart, path, (lo, hi))?;
    }
    root.present().map_err(err(path))?;
    Ok(())
}

/// What a line figure draws: each series' `value` per point, with its band.
struct LineFigure<'a, V> {
    r: &'a InspectReport,
    series: Vec<(String, &'a [PointReport])>,
    y_desc: &'a str,
    log: bool,
    value: V,
    band: Option<Band>,
}

impl<V: Fn(&PointReport) -> f64> LineFigure<'_, V> {
    /// Whether a value can be drawn (finite, and positive on a log axis).
    fn drawable(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }

    /// The lowest and highest drawable value of the lines and bands.
    fn value_range(&self) -> (f64, f64) {
        let value = &self.value;
        let (mut lo, mut hi) = self
            .series
            .iter()
            .flat_map(|(_, p)| p.iter())
            .flat_map(|p| {
                let (a, b) = self.band.map(|f| f(p)).unwrap_or((value(p), value(p)));
                [value(p), a, b]
            })
            .filter(|v| self.drawable(*v))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = (0.1, 1.0);
        }
        if hi <= lo {
            hi = lo + 1.0;
        }
        (lo, hi)
    }

    /// The mesh, every series (its band thin and pale), the seams from `seam_y.0` to
    /// `seam_y.1`, and the legend.
    fn draw<'c, 'b: 'c, Y>(
        &self,
        mut chart: ChartContext<'c, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
        path: &Path,
        seam_y: (f64, f64),
    ) -> Result<()>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_desc("point r")
            .y_desc(self.y_desc)
            .draw()
            .map_err(err(path))?;
        for (i, (name, points)) in self.series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            let line = points.iter().map(|p| (p.r as f64, (self.value)(p)));
            chart
                .draw_series(LineSeries::new(
                    line.filter(|(_, v)| self.drawable(*v)),
                    c.stroke_width(2),
                ))
                .map_err(err(path))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
            let Some(f) = self.band else { continue };
            for pick in [0usize, 1] {
                let edge = points.iter().map(|p| {
                    let (a, b) = f(p);
                    (p.r as f64, if pick == 0 { a } else { b })
                });
                chart
                    .draw_series(LineSeries::new(
                        edge.filter(|(_, v)| self.drawable(*v)),
                        c.mix(0.4).stroke_width(1),
                    ))
                    .map_err(err(path))?;
            }
        }
        for seam in &self.r.seams {
            let x = seam.after_block as f64;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, seam_y.0), (x, seam_y.1)],
                    BLACK.mix(0.5),
                )))
                .map_err(err(path))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err(path))?;
        Ok(())
    }
}

fn cka(r: &InspectReport, path: &Path) -> Result<()> {
    let n = r.seams.len().max(1);
    let root = SVGBackend::new(path, (420 * n as u32, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    for (seam, area) in r.seams.iter().zip(root.split_evenly((1, n)).iter()) {
        let rows = seam.cka_matrix.len() as f64;
        let cols = seam.cka_matrix.first().map(|c| c.len()).unwrap_or(1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("CKA: {} points vs {} alone", seam.lower, seam.upper),
                ("sans-serif", 16),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..cols, 0f64..rows)
            .map_err(err(path))?;
        chart
            .configure_mesh()
            .x_desc(format!("{} point", seam.upper))
            .y_desc("stack point")
            .disable_mesh()
            .draw()
            .map_err(err(path))?;
        for (i, row) in seam.cka_matrix.iter().enumerate() {
            chart
                .draw_series(row.iter().enumerate().map(|(j, &v)| {
                    Rectangle::new(
                        [(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)],
                        heat(v).filled(),
                    )
                }))
                .map_err(err(path))?;
        }
    }
    root.present().map_err(err(path))?;
    Ok(())
}

/// Writes every figure into `dir` (created if needed) and returns their paths.
pub fn write_figures(r: &InspectReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let p = |name: &str| dir.join(name);
    let out = vec![
        p("norm_heatmap.svg"),
        p("rms.svg"),
        p("lens.svg"),
        p("lens_kl.svg"),
        p("cka.svg"),
    ];
    // Each figure is drawn into a temporary file and renamed into place.
    let tmp = |f: &Path| f.with_extension("svg.tmp");
    norm_heatmap(r, &tmp(&out[0]))?;
    lines(
        r,
        &tmp(&out[1]),
        "residual RMS per point (p05, p50, p95)",
        "RMS",
        true,
        |p| p.rms.p50,
        Some(|p| (p.rms.p05, p.rms.p95)),
    )?;
    lines(
        r,
        &tmp(&out[2]),
        "logit lens: cross-entropy per point",
        "loss",
        false,
        |p| p.lens.loss,
        None,
    )?;
    lines(
        r,
        &tmp(&out[3]),
        "logit lens: KL(final || point)",
        "KL",
        false,
        |p| p.lens.kl_to_final,
        None,
    )?;
    cka(r, &tmp(&out[4]))?;
    for f in &out {
        std::fs::rename(tmp(f), f).with_context(|| format!("cannot write {}", f.display()))?;
    }
    Ok(out)
}
