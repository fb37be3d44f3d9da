//! Drawing an inspection: heat maps of layer x log-norm bins (stack, then each model alone)
//! with the seams marked, RMS percentiles and the logit-lens loss per layer, the seam's
//! numbers.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, LegendPosition, Paragraph, Wrap};
use ratatui::Frame;

use super::InspectPane;
use crate::inspect::report::{InspectReport, PointReport};
use crate::tui::theme::Theme;
use crate::tui::widgets::{self, block, clip};

const SHADES: [&str; 5] = [" ", "░", "▒", "▓", "█"];
const ASCII_SHADES: [&str; 5] = [" ", ".", ":", "*", "#"];

fn point_label(p: &PointReport) -> String {
    match p.block {
        None => "emb".into(),
        Some(b) => format!("{}:{b}", p.model),
    }
}

/// Histogram bins merged to at most `cols` columns.
fn merged(hist: &[u64], cols: usize) -> Vec<u64> {
    if hist.is_empty() || cols == 0 {
        return vec![];
    }
    let g = hist.len().div_ceil(cols);
    hist.chunks(g).map(|c| c.iter().sum()).collect()
}

/// One heat map: a row per residual point (`emb`, then each block's output), shaded by the
/// share of tokens in each log-RMS bin (per row), a seam line after each point in `seams`.
pub fn heat_map(
    points: &[PointReport],
    seams: &[(usize, String)],
    cols: usize,
    theme: &Theme,
) -> Vec<Line<'static>> {
    let shades = if theme.ascii { ASCII_SHADES } else { SHADES };
    let mut out = Vec::new();
    for (r, p) in points.iter().enumerate() {
        let h = merged(&p.hist, cols);
        let max = h.iter().copied().max().unwrap_or(0).max(1) as f64;
        let cells: String = h
            .iter()
            .map(|&c| {
                let lvl = if c == 0 {
                    0
                } else {
                    (1.0 + 3.0 * c as f64 / max).round() as usize
                };
                shades[lvl.min(4)]
            })
            .collect();
        out.push(Line::from(vec![
            Span::styled(
                format!("{:>6} ", point_label(p)),
                Style::default().fg(theme.dim),
            ),
            Span::styled(cells, Style::default().fg(theme.accent)),
            Span::styled(format!(" {:.3}", p.rms.p50), Style::default().fg(theme.dim)),
        ]));
        for (_, name) in seams.iter().filter(|(after, _)| *after == r) {
            let rule = if theme.ascii { "=" } else { "═" };
            out.push(Line::from(Span::styled(
                format!(
                    "{} seam {name} {}",
                    rule.repeat(6),
                    rule.repeat(cols.saturating_sub(8))
                ),
                Style::default().fg(theme.warn).add_modifier(Modifier::BOLD),
            )));
        }
    }
    out
}

fn header(r: &InspectReport, of: &str) -> String {
    let parts: Vec<String> = r
        .parts
        .iter()
        .map(|p| format!("{} alone {:.4}", p.model, p.val_loss))
        .collect();
    format!(
        "{of} · probe {} tokens · stack {:.4} · {}",
        r.tokens,
        r.val_loss_stack,
        parts.join(" · ")
    )
}

fn seam_lines(r: &InspectReport, theme: &Theme) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for s in &r.seams {
        let st = &s.stitch;
        out.push(Line::styled(
            format!(
                "seam {} -> {} after stack block {}",
                s.lower, s.upper, s.after_block
            ),
            Style::default().fg(theme.warn).add_modifier(Modifier::BOLD),
        ));
        out.push(Line::raw(format!(
            " rms received/expected {:.3}/{:.3} = {:.3} · cos to expected {:.3}",
            s.rms_received, s.rms_expected, s.rms_ratio, s.cos_to_expected
        )));
        out.push(Line::raw(format!(
            " CKA {:.3} (debiased {:.3}) · best match: {} point {} (expects {})",
            s.cka, s.cka_debiased, s.upper, s.best_match_point, s.upper_start
        )));
        let trained = st
            .trained
            .map(|t| format!(" · trained {t:.4}"))
            .unwrap_or_default();
        out.push(Line::raw(format!(
            " stitch: as is {:.4} · identity {:.4} · lstsq {:.4}{trained} · {} alone {:.4} · penalty {:+.4} ({})",
            st.none, st.identity, st.lstsq, s.upper, st.upper_model, st.penalty, st.chosen
        )));
    }
    out
}

fn log10(v: f64) -> f64 {
    v.max(1e-12).log10()
}

/// A chart of per-layer values: one dataset per (name, points).
fn layer_chart(
    f: &mut Frame,
    area: Rect,
    title: &str,
    sets: &[(String, Vec<(f64, f64)>)],
    y_label: impl Fn(f64) -> String,
    theme: &Theme,
) {
    let all = sets.iter().flat_map(|(_, v)| v.iter());
    let (mut y0, mut y1, mut x1) = (f64::INFINITY, f64::NEG_INFINITY, 1.0f64);
    for &(x, y) in all {
        y0 = y0.min(y);
        y1 = y1.max(y);
        x1 = x1.max(x);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    if y1 - y0 < 1e-9 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let marker = if theme.ascii {
        Marker::Dot
    } else {
        Marker::Braille
    };
    let datasets: Vec<Dataset> = sets
        .iter()
        .enumerate()
        .map(|(i, (name, pts))| {
            // An unnamed series (a band around a named one) stays out of the legend.
            let d = if name.is_empty() {
                Dataset::default()
            } else {
                Dataset::default().name(name.clone())
            };
            d.marker(marker)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(if name.is_empty() {
                    theme.dim
                } else {
                    theme.series[i % theme.series.len()]
                }))
                .data(pts)
        })
        .collect();
    // Every chart names its series: the legend stays unless it would cover most of it.
    let chart = Chart::new(datasets)
        .legend_position(Some(LegendPosition::TopRight))
        .hidden_legend_constraints((Constraint::Percentage(50), Constraint::Percentage(100)))
        .block(block(title, theme))
        .x_axis(
            Axis::default()
                .bounds([0.0, x1])
                .labels(vec![Span::raw("0"), Span::raw(format!("{x1:.0}"))])
                .style(Style::default().fg(theme.dim)),
        )
        .y_axis(
            Axis::default()
                .bounds([y0, y1])
                .labels(vec![Span::raw(y_label(y0)), Span::raw(y_label(y1))])
                .style(Style::default().fg(theme.dim)),
        );
    f.render_widget(chart, area);
}

fn charts(r: &InspectReport, f: &mut Frame, area: Rect, theme: &Theme) {
    let [left, middle, right] = Layout::horizontal([
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
        Constraint::Ratio(1, 3),
    ])
    .areas(area);
    let xy = |pts: &[PointReport], v: &dyn Fn(&PointReport) -> f64| -> Vec<(f64, f64)> {
        pts.iter()
            .enumerate()
            .map(|(i, p)| (i as f64, v(p)))
            .collect()
    };
    let mut rms = vec![
        (
            "stack p50".to_string(),
            xy(&r.points, &|p| log10(p.rms.p50)),
        ),
        (String::new(), xy(&r.points, &|p| log10(p.rms.p05))),
        (String::new(), xy(&r.points, &|p| log10(p.rms.p95))),
    ];
    for p in &r.parts {
        rms.push((
            format!("{} p50", p.model),
            xy(&p.points, &|p| log10(p.rms.p50)),
        ));
    }
    layer_chart(
        f,
        left,
        "RMS per layer (log)",
        &rms,
        |y| format!("{:.2}", 10f64.powf(y)),
        theme,
    );
    let mut lens = vec![("stack".to_string(), xy(&r.points, &|p| p.lens.loss))];
    for p in &r.parts {
        lens.push((p.model.clone(), xy(&p.points, &|p| p.lens.loss)));
    }
    layer_chart(
        f,
        middle,
        "logit-lens loss per layer",
        &lens,
        |y| format!("{y:.2}"),
        theme,
    );
    // Parent attribution: how far the stack's lens is from each part's own prediction.
    let parts: Vec<String> = r
        .points
        .first()
        .map(|p| p.attribution.iter().map(|a| a.model.clone()).collect())
        .unwrap_or_default();
    let follows: Vec<(String, Vec<(f64, f64)>)> = parts
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let pts = r
                .points
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.attribution.get(j).map(|a| (i as f64, a.kl)))
                .collect();
            (format!("KL to {m}"), pts)
        })
        .collect();
    layer_chart(
        f,
        right,
        "follows: KL(part's own || stack lens)",
        &follows,
        |y| format!("{y:.2}"),
        theme,
    );
}

fn status_line(p: &InspectPane, f: &mut Frame, area: Rect, theme: &Theme) {
    widgets::job_line::draw(
        f,
        area,
        p.job.as_ref(),
        "inspecting",
        "probe tokens",
        p.message.as_ref(),
        theme,
    );
}

pub fn draw(p: &mut InspectPane, f: &mut Frame, area: Rect, theme: &Theme) {
    let [status, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    status_line(p, f, status, theme);
    let Some(r) = &p.report else {
        let text = match &p.request {
            None => "no stack inspected yet: build one in the Stack pane and press i".to_string(),
            Some((_, _, what)) => format!("inspecting {what} ..."),
        };
        f.render_widget(
            Paragraph::new(text)
                .style(Style::default().fg(theme.dim))
                .wrap(Wrap { trim: true })
                .block(block("Inspect", theme)),
            body,
        );
        return;
    };
    let seams_h = (r.seams.len() * 4) as u16 + 2 + p.figures.as_ref().map(|_| 2).unwrap_or(0);
    let tall = body.height >= 30;
    let [maps, chart_area, seam_area] = if tall {
        Layout::vertical([
            Constraint::Min(8),
            Constraint::Length(10),
            Constraint::Length(seams_h),
        ])
        .areas(body)
    } else {
        Layout::vertical([
            Constraint::Min(5),
            Constraint::Length(0),
            Constraint::Length(seams_h.min(body.height / 2)),
        ])
        .areas(body)
    };
    heat_maps(p, r, f, maps, theme);
    if tall {
        charts(r, f, chart_area, theme);
    }
    seam_panel(p, r, f, seam_area, theme);
}

/// The stack's heat map, then each model alone, side by side (scrolled by the pane).
fn heat_maps(p: &InspectPane, r: &InspectReport, f: &mut Frame, area: Rect, theme: &Theme) {
    let n = 1 + r.parts.len() as u16;
    let stack_w = (area.width * 2 / (n + 1)).max(20);
    let mut constraints = vec![Constraint::Length(stack_w.min(area.width))];
    constraints.extend((0..r.parts.len()).map(|_| Constraint::Fill(1)));
    let cols = Layout::horizontal(constraints).split(area);
    let seams: Vec<(usize, String)> = r
        .seams
        .iter()
        .map(|s| (s.after_block, format!("{} -> {}", s.lower, s.upper)))
        .collect();
    let lo = r.hist_edges_log10.first().copied().unwrap_or(0.0);
    let hi = r.hist_edges_log10.last().copied().unwrap_or(0.0);
    let title = clip(
        &header(r, &p.report_of),
        cols[0].width.saturating_sub(4) as usize,
    );
    let draw_map = |f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'static>>| {
        let mut lines: Vec<Line> = lines.into_iter().skip(p.scroll).collect();
        lines.push(Line::styled(
            format!("  log10 rms {lo:.2} .. {hi:.2}"),
            Style::default().fg(theme.dim),
        ));
        f.render_widget(Paragraph::new(lines).block(block(title, theme)), area);
    };
    let cols_of = |w: u16| (w as usize).saturating_sub(16).max(4);
    draw_map(
        f,
        cols[0],
        &title,
        heat_map(&r.points, &seams, cols_of(cols[0].width), theme),
    );
    for (i, part) in r.parts.iter().enumerate() {
        let area = cols[i + 1];
        let t = format!(
            "{} alone [{}, {})",
            part.model, part.range[0], part.range[1]
        );
        draw_map(
            f,
            area,
            &t,
            heat_map(&part.points, &[], cols_of(area.width), theme),
        );
    }
}

/// Each seam's numbers, and where the figures were written.
fn seam_panel(p: &InspectPane, r: &InspectReport, f: &mut Frame, area: Rect, theme: &Theme) {
    let mut lines = seam_lines(r, theme);
    if let Some((dir, files)) = &p.figures {
        lines.push(Line::styled(
            format!("figures in {}:", dir.display()),
            Style::default().fg(theme.dim),
        ));
        lines.push(Line::raw(format!(" {}", files.join("  "))));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Seams", theme)),
        area,
    );
}
