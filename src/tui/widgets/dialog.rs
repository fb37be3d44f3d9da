//! Pop-ups over a pane: a yes/no confirmation, the help screen, the too-small message.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::{block, centered};
use crate::tui::theme::Theme;

/// A question with what `y` does spelled out.
pub fn confirm(f: &mut Frame, area: Rect, title: &str, text: &[String], theme: &Theme) {
    let h = text.len() as u16 + 4;
    let area = centered(area, 62, h + 1);
    f.render_widget(Clear, area);
    let mut lines: Vec<Line> = text
        .iter()
        .map(|t| Line::from(Span::styled(t.clone(), Style::default().fg(theme.text))))
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "y yes · any other key: no",
        Style::default().fg(theme.warn).add_modifier(Modifier::BOLD),
    )));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(title, theme).border_style(Style::default().fg(theme.warn))),
        area,
    );
}

/// Every key: sections of (key, what it does), and a footer (the log file's path).
pub fn help(
    f: &mut Frame,
    area: Rect,
    sections: &[(String, Vec<(String, String)>)],
    footer: &[String],
    theme: &Theme,
) {
    let inner = centered(
        area,
        area.width.saturating_sub(4).min(90),
        area.height.saturating_sub(2),
    );
    f.render_widget(Clear, inner);
    let mut lines = Vec::new();
    for (title, keys) in sections {
        lines.push(Line::from(Span::styled(
            title.clone(),
            Style::default()
                .fg(theme.accent)
                .add_modifier(Modifier::BOLD),
        )));
        for (k, what) in keys {
            lines.push(Line::from(vec![
                Span::styled(format!("  {k:<12}"), Style::default().fg(theme.warn)),
                Span::styled(what.clone(), Style::default().fg(theme.text)),
            ]));
        }
    }
    lines.push(Line::from(""));
    for l in footer {
        lines.push(Line::from(Span::styled(
            l.clone(),
            Style::default().fg(theme.dim),
        )));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("help · any key closes", theme)),
        inner,
    );
}

/// What is drawn instead of the lab when the terminal is below the minimum.
pub fn too_small(f: &mut Frame, min: (u16, u16), theme: &Theme) {
    let area = f.area();
    let text = format!(
        "terminal too small (need {}x{}, have {}x{})",
        min.0, min.1, area.width, area.height
    );
    let y = area.height / 2;
    let line = Rect {
        x: area.x,
        y: area.y + y,
        width: area.width,
        height: 1.min(area.height),
    };
    f.render_widget(
        Paragraph::new(Span::styled(text, Style::default().fg(theme.warn)))
            .alignment(ratatui::layout::Alignment::Center)
            .wrap(Wrap { trim: true }),
        line,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::widgets::testing::render;

    #[test]
    fn confirm_help_and_too_small() {
        let t = Theme::shipped_default();
        let s = render(70, 10, |f| {
            confirm(f, f.area(), "stop", &["stop model1 gracefully?".into()], &t)
        });
        assert!(
            s.contains("stop model1 gracefully?") && s.contains("y yes"),
            "{s}"
        );
        let sections = vec![(
            "global".to_string(),
            vec![("q".to_string(), "quit".to_string())],
        )];
        let s = render(60, 20, |f| {
            help(f, f.area(), &sections, &["log: /x/lab.log".into()], &t)
        });
        assert!(
            s.contains("q           quit") && s.contains("log: /x/lab.log"),
            "{s}"
        );
        let s = render(59, 20, |f| too_small(f, (60, 20), &t));
        assert!(
            s.contains("terminal too small (need 60x20, have 59x20)"),
            "{s}"
        );
        // Tiny sizes draw without panicking.
        for (w, h) in [(1, 1), (10, 2)] {
            render(w, h, |f| too_small(f, (60, 20), &t));
            render(w, h, |f| confirm(f, f.area(), "x", &["y".into()], &t));
        }
    }
}
