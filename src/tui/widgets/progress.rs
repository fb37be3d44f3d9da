//! A run's progress: a gauge with step / total and the ETA, and a tokens/s sparkline.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Gauge, Sparkline};
use ratatui::Frame;

use crate::tui::series;
use crate::tui::theme::Theme;

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub step: i64,
    pub total_steps: i64,
    pub eta_s: Option<f64>,
    /// Recent tokens/s, oldest first.
    pub tokens_per_s: Vec<f64>,
}

impl Progress {
    pub fn label(&self) -> String {
        let pct = if self.total_steps > 0 {
            100.0 * self.step as f64 / self.total_steps as f64
        } else {
            0.0
        };
        let eta = self
            .eta_s
            .map(|s| format!(" · eta {}", series::duration(s)))
            .unwrap_or_default();
        format!("step {}/{} · {pct:.0}%{eta}", self.step, self.total_steps)
    }
}

/// One line: the gauge on the left, the sparkline (with the last rate) on the right.
pub fn draw(f: &mut Frame, area: Rect, p: &Progress, theme: &Theme) {
    let [gauge_area, spark_area] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let ratio = if p.total_steps > 0 {
        (p.step as f64 / p.total_steps as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let gauge_style = if theme.no_color {
        Style::default()
    } else {
        Style::default().fg(theme.accent).bg(theme.faint)
    };
    f.render_widget(
        Gauge::default()
            .gauge_style(gauge_style)
            .use_unicode(!theme.ascii)
            .ratio(ratio)
            .label(p.label()),
        gauge_area,
    );
    let label = format!(" {} tok/s", series::rate(p.tokens_per_s.last().copied()));
    let [spark, text] = Layout::horizontal([
        Constraint::Min(1),
        Constraint::Length(label.chars().count() as u16),
    ])
    .areas(spark_area);
    let n = spark.width as usize;
    let data: Vec<u64> = p.tokens_per_s[p.tokens_per_s.len().saturating_sub(n)..]
        .iter()
        .map(|v| v.max(0.0) as u64)
        .collect();
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::default().fg(theme.ok)),
        spark,
    );
    f.render_widget(
        ratatui::widgets::Paragraph::new(label).style(Style::default().fg(theme.dim)),
        text,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::widgets::testing::render;

    #[test]
    fn gauge_label_and_sparkline() {
        let p = Progress {
            step: 120,
            total_steps: 300,
            eta_s: Some(80.0),
            tokens_per_s: (0..100).map(|i| 1000.0 + 10.0 * i as f64).collect(),
        };
        let s = render(80, 1, |f| draw(f, f.area(), &p, &Theme::shipped_default()));
        assert!(s.contains("step 120/300 · 40% · eta 1m20s"), "{s}");
        assert!(s.contains("1990 tok/s") && s.contains('█'), "{s}");
        let p = Progress {
            eta_s: None,
            tokens_per_s: vec![],
            ..p
        };
        let s = render(60, 1, |f| draw(f, f.area(), &p, &Theme::shipped_default()));
        assert!(s.contains("step 120/300") && s.contains("- tok/s"), "{s}");
    }
}
