//! Loss curves: the selected run's train loss smoothed (the raw curve faint behind it), its
//! val loss and latent loss, and pinned runs' smoothed train loss in their own colours.
//! A log-scale y is drawn by plotting ln(loss) and labelling the ticks with the loss.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Span;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::block;
use crate::tui::config::Window;
use crate::tui::series;
use crate::tui::theme::Theme;

/// One curve before smoothing and windowing.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub color: Color,
    pub points: Vec<(f64, f64)>,
    /// Smoothed, with the raw curve faint behind it (train and latent loss); val loss is
    /// drawn as it is.
    pub smooth: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartView {
    pub ema: f64,
    pub log_y: bool,
    pub window: Window,
    pub recent_steps: i64,
    pub ascii: bool,
}

struct Prepared {
    label: String,
    color: Color,
    faint: bool,
    points: Vec<(f64, f64)>,
}

fn prepare(curves: &[Curve], view: &ChartView, width: u16, theme: &Theme) -> Vec<Prepared> {
    // Two samples per cell column is all a Braille chart can show.
    let max_points = (width as usize * 2).max(16);
    let mut out = Vec::new();
    for c in curves {
        let windowed = match view.window {
            Window::All => &c.points[..],
            Window::Recent => series::recent(&c.points, view.recent_steps),
        };
        let scale = |p: Vec<(f64, f64)>| {
            let p = series::downsample(&p, max_points);
            if view.log_y {
                series::log_y(&p)
            } else {
                p
            }
        };
        if c.smooth && view.ema > 0.0 {
            out.push(Prepared {
                label: String::new(),
                color: theme.faint,
                faint: true,
                points: scale(windowed.to_vec()),
            });
            out.push(Prepared {
                label: c.label.clone(),
                color: c.color,
                faint: false,
                points: scale(series::ema(windowed, view.ema)),
            });
        } else {
            out.push(Prepared {
                label: c.label.clone(),
                color: c.color,
                faint: false,
                points: scale(windowed.to_vec()),
            });
        }
    }
    // Faint raw curves first, so the smoothed ones are drawn over them.
    out.sort_by_key(|p| !p.faint);
    out
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn draw(
    f: &mut Frame,
    area: Rect,
    title: &str,
    curves: &[Curve],
    view: &ChartView,
    theme: &Theme,
) {
    let prepared = prepare(curves, view, area.width.saturating_sub(10), theme);
    let block = block(&chart_title(title, view), theme);
    let Some(([x0, x1], [y0, y1])) = bounds(&prepared) else {
        f.render_widget(
            Paragraph::new(Span::styled(
                "no metrics yet",
                Style::default().fg(theme.dim),
            ))
            .block(block),
            area,
        );
        return;
    };
    let marker = if view.ascii || theme.ascii {
        Marker::Dot
    } else {
        Marker::Braille
    };
    let datasets: Vec<Dataset> = prepared
        .iter()
        .map(|p| {
            let mut d = Dataset::default()
                .marker(marker)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(p.color))
                .data(&p.points);
            if !p.label.is_empty() {
                d = d.name(p.label.clone());
            }
            d
        })
        .collect();
    let ylabel = |v: f64| fmt_tick(if view.log_y { v.exp() } else { v });
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .style(Style::default().fg(theme.dim))
                .bounds([x0, x1])
                .labels([format!("{x0:.0}"), format!("{x1:.0}")]),
        )
        .y_axis(
            Axis::default()
                .style(Style::default().fg(theme.dim))
                .bounds([y0, y1])
                .labels([ylabel(y0), ylabel((y0 + y1) / 2.0), ylabel(y1)]),
        )
        .legend_position(Some(ratatui::widgets::LegendPosition::TopRight))
        .hidden_legend_constraints((
            ratatui::layout::Constraint::Ratio(1, 2),
            ratatui::layout::Constraint::Ratio(1, 2),
        ));
    f.render_widget(chart, area);
}

/// The title with the view's settings: log y, smoothing, window.
fn chart_title(title: &str, view: &ChartView) -> String {
    let mut title = title.to_string();
    if view.log_y {
        title.push_str(" · log y");
    }
    if view.ema > 0.0 {
        title.push_str(&format!(" · ema {:.2}", view.ema));
    }
    if view.window == Window::Recent {
        title.push_str(&format!(" · last {} steps", view.recent_steps));
    }
    title
}

/// The x and y ranges of the finite points (at least one step wide, y padded by 5 %), or
/// `None` when there are none.
fn bounds(prepared: &[Prepared]) -> Option<([f64; 2], [f64; 2])> {
    let pts = prepared.iter().flat_map(|p| p.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return None;
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    Some(([x0, x1], [y0 - pad, y1 + pad]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::widgets::testing::render;

    fn curves() -> Vec<Curve> {
        let train: Vec<(f64, f64)> = (0..300)
            .map(|i| {
                (
                    i as f64,
                    8.0 * (-(i as f64) / 100.0).exp() + 4.0 + 0.3 * ((i % 7) as f64 - 3.0) / 3.0,
                )
            })
            .collect();
        let val: Vec<(f64, f64)> = (0..=6)
            .map(|i| (i as f64 * 50.0, 8.0 * (-(i as f64) / 2.0).exp() + 4.2))
            .collect();
        vec![
            Curve {
                label: "train".into(),
                color: Color::Cyan,
                points: train,
                smooth: true,
            },
            Curve {
                label: "val".into(),
                color: Color::Green,
                points: val,
                smooth: false,
            },
        ]
    }

    fn view(ascii: bool, log_y: bool) -> ChartView {
        ChartView {
            ema: 0.6,
            log_y,
            window: Window::All,
            recent_steps: 50,
            ascii,
        }
    }

    fn has_braille(s: &str) -> bool {
        s.chars().any(|c| ('\u{2800}'..='\u{28ff}').contains(&c))
    }

    #[test]
    fn chart_draws_curves_labels_and_ascii() {
        let theme = Theme::shipped_default();
        let s = render(80, 16, |f| {
            draw(f, f.area(), "loss", &curves(), &view(false, false), &theme)
        });
        assert!(s.contains("loss · ema 0.60"), "{s}");
        assert!(s.contains("train") && s.contains("val"), "legend:\n{s}");
        assert!(
            s.contains("300") && s.contains("12.6"),
            "axes end at the last step and the top loss:\n{s}"
        );
        assert!(has_braille(&s), "{s}");
        let s = render(80, 16, |f| {
            draw(f, f.area(), "loss", &curves(), &view(true, false), &theme)
        });
        assert!(
            !has_braille(&s) && s.contains('•'),
            "ascii charts use dots:\n{s}"
        );
        // Log scale: the ticks are losses, not their logarithms.
        let s = render(80, 16, |f| {
            draw(f, f.area(), "loss", &curves(), &view(false, true), &theme)
        });
        assert!(
            s.contains("log y") && s.contains("12.") && !s.contains("2.48"),
            "{s}"
        );
        let mut v = view(false, false);
        v.window = Window::Recent;
        let s = render(60, 10, |f| draw(f, f.area(), "loss", &curves(), &v, &theme));
        assert!(
            s.contains("last 50 steps") && s.contains("250") && s.contains("300"),
            "{s}"
        );
        let s = render(60, 10, |f| draw(f, f.area(), "loss", &[], &v, &theme));
        assert!(s.contains("no metrics yet"), "{s}");
    }
}
