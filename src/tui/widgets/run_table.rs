//! The list of runs: state, step / total, last losses, tokens/s, age.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Row, Table, TableState};
use ratatui::Frame;

use super::{block, clip, selected_style};
use crate::runs::registry::Phase;
use crate::tui::series;
use crate::tui::theme::Theme;

/// One row, already in words.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub name: String,
    pub phase: Phase,
    pub step: i64,
    pub total_steps: i64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// Seconds since the run last wrote its status.
    pub age_s: Option<f64>,
    pub pinned: bool,
}

pub fn phase_color(phase: Phase, theme: &Theme) -> ratatui::style::Color {
    match phase {
        Phase::Running | Phase::Starting => theme.accent,
        Phase::Done => theme.ok,
        Phase::Queued | Phase::Stopped => theme.warn,
        Phase::Lost | Phase::Failed | Phase::Corrupt => theme.error,
    }
}

/// `12s`, `5m`, `3h`, `2d`.
pub fn age(s: f64) -> String {
    let s = s.max(0.0) as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn draw(
    f: &mut Frame,
    area: Rect,
    rows: &[RunRow],
    state: &mut TableState,
    title: &str,
    theme: &Theme,
) {
    let wide = area.width >= 78;
    let header: Vec<&str> = if wide {
        vec!["run", "state", "step", "train", "val", "tok/s", "age"]
    } else {
        vec!["run", "state", "step", "val", "age"]
    };
    let header = Row::new(header).style(
        Style::default()
            .fg(theme.accent)
            .add_modifier(Modifier::BOLD),
    );
    let name_w = (area.width as usize)
        .saturating_sub(if wide { 62 } else { 38 })
        .clamp(8, 40);
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            let pin = if r.pinned { "*" } else { "" };
            let name = Span::styled(
                clip(&format!("{pin}{}", r.name), name_w),
                Style::default().fg(if r.pinned {
                    theme.run_color(&r.name)
                } else {
                    theme.text
                }),
            );
            let state = Span::styled(
                r.phase.as_str(),
                Style::default().fg(phase_color(r.phase, theme)),
            );
            let step = if r.total_steps > 0 {
                format!("{}/{}", r.step, r.total_steps)
            } else {
                "-".into()
            };
            let age = r.age_s.map(age).unwrap_or_else(|| "-".into());
            let cells: Vec<Span> = if wide {
                vec![
                    name,
                    state,
                    Span::raw(step),
                    Span::raw(series::loss(r.train_loss)),
                    Span::raw(series::loss(r.val_loss)),
                    Span::raw(series::rate(r.tokens_per_s)),
                    Span::styled(age, Style::default().fg(theme.dim)),
                ]
            } else {
                vec![
                    name,
                    state,
                    Span::raw(step),
                    Span::raw(series::loss(r.val_loss)),
                    Span::styled(age, Style::default().fg(theme.dim)),
                ]
            };
            Row::new(cells)
        })
        .collect();
    let widths: Vec<Constraint> = if wide {
        vec![
            Constraint::Min(8),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(4),
        ]
    } else {
        vec![
            Constraint::Min(8),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(7),
            Constraint::Length(4),
        ]
    };
    let table = if rows.is_empty() {
        Table::new(
            vec![Row::new(vec![Span::styled(
                "no runs: n starts one from a config",
                Style::default().fg(theme.dim),
            )])],
            [Constraint::Min(10)],
        )
    } else {
        Table::new(body, widths)
            .header(header)
            .row_highlight_style(selected_style(theme))
    };
    f.render_stateful_widget(table.block(block(title, theme)), area, state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::widgets::testing::render;

    fn rows() -> Vec<RunRow> {
        vec![
            RunRow {
                name: "model1".into(),
                phase: Phase::Done,
                step: 300,
                total_steps: 300,
                train_loss: Some(4.61234),
                val_loss: Some(4.7321),
                tokens_per_s: Some(15230.0),
                age_s: Some(7200.0),
                pinned: true,
            },
            RunRow {
                name: "model2".into(),
                phase: Phase::Running,
                step: 120,
                total_steps: 300,
                train_loss: Some(5.0),
                val_loss: None,
                tokens_per_s: Some(812.0),
                age_s: Some(3.0),
                pinned: false,
            },
            RunRow {
                name: "broken".into(),
                phase: Phase::Corrupt,
                step: 0,
                total_steps: 0,
                train_loss: None,
                val_loss: None,
                tokens_per_s: None,
                age_s: None,
                pinned: false,
            },
        ]
    }

    #[test]
    fn wide_and_narrow_tables() {
        let mut st = TableState::default().with_selected(Some(1));
        let s = render(100, 8, |f| {
            draw(
                f,
                f.area(),
                &rows(),
                &mut st,
                "runs",
                &Theme::shipped_default(),
            )
        });
        for want in [
            "*model1", "done", "300/300", "4.6123", "4.7321", "15.2k", "2h", "running", "120/300",
            "812", "3s", "corrupt",
        ] {
            assert!(s.contains(want), "{want}:\n{s}");
        }
        let s = render(60, 8, |f| {
            draw(
                f,
                f.area(),
                &rows(),
                &mut st,
                "runs",
                &Theme::shipped_default(),
            )
        });
        assert!(
            s.contains("model2") && s.contains("120/300") && !s.contains("tok/s"),
            "{s}"
        );
        let s = render(60, 5, |f| {
            draw(
                f,
                f.area(),
                &[],
                &mut TableState::default(),
                "runs",
                &Theme::shipped_default(),
            )
        });
        assert!(s.contains("no runs: n starts one"), "{s}");
    }
}
