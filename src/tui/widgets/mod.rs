//! Reusable drawing pieces. Each takes plain data and a theme, so it can be drawn (and
//! tested with `TestBackend`) from fixed state.

pub mod dialog;
pub mod form;
pub mod job_line;
pub mod log_view;
pub mod loss_chart;
pub mod progress;
pub mod run_table;

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};

use super::theme::Theme;

/// A bordered block with a title in the accent colour.
pub fn block<'a>(title: &str, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(Style::default().fg(theme.border))
        .title(Span::styled(
            format!(" {title} "),
            Style::default()
                .fg(theme.accent)
                .add_modifier(Modifier::BOLD),
        ))
}

/// A one-line gauge with a label (fractional blocks only without `ascii`).
pub fn gauge(f: &mut ratatui::Frame, area: Rect, ratio: f64, label: &str, theme: &Theme) {
    let style = if theme.no_color {
        Style::default()
    } else {
        Style::default().fg(theme.accent).bg(theme.faint)
    };
    f.render_widget(
        ratatui::widgets::Gauge::default()
            .gauge_style(style)
            .use_unicode(!theme.ascii)
            .ratio(ratio.clamp(0.0, 1.0))
            .label(label.to_string()),
        area,
    );
}

/// A `w` x `h` rectangle centred in `area` (clipped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// The selected row's style: the selection colour, or reverse video without colours.
pub fn selected_style(theme: &Theme) -> Style {
    if theme.no_color {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default()
            .bg(theme.selection)
            .add_modifier(Modifier::BOLD)
    }
}

/// Text cut to `max` characters with an ellipsis.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max <= 1 {
        s.chars().take(max).collect()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('~');
        t
    }
}

#[cfg(test)]
pub mod testing {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// Draws with `f` on a `w` x `h` TestBackend and returns the screen as text lines.
    pub fn render(w: u16, h: u16, f: impl FnOnce(&mut ratatui::Frame)) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(f).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
