//! One line for a background job: a gauge with what it does, tokens done and the ETA while
//! it runs; else the pane's last message (green, or red for an error).

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::tui::jobs::Job;
use crate::tui::series;
use crate::tui::theme::Theme;

/// `what` says what the job does (`evaluating`), `unit` what it counts (`tokens`).
pub fn draw(
    f: &mut Frame,
    area: Rect,
    job: Option<&Job>,
    what: &str,
    unit: &str,
    message: Option<&(String, bool)>,
    theme: &Theme,
) {
    if let Some(job) = job.filter(|j| j.is_running()) {
        let (ratio, label) = match job.progress() {
            Some(pr) if pr.total > 0 => (
                pr.done as f64 / pr.total as f64,
                format!(
                    "{what} · {}/{} {unit}{} · Esc cancels",
                    pr.done,
                    pr.total,
                    job.eta_s()
                        .map(|s| format!(" · eta {}", series::duration(s)))
                        .unwrap_or_default()
                ),
            ),
            _ => (
                0.0,
                format!(
                    "{what} · loading models ({}) · Esc cancels",
                    series::duration(job.started.elapsed().as_secs_f64())
                ),
            ),
        };
        super::gauge(f, area, ratio, &label, theme);
    } else if let Some((m, err)) = message {
        let style = Style::default().fg(if *err { theme.error } else { theme.ok });
        f.render_widget(Paragraph::new(m.clone()).style(style), area);
    }
}
