//! The System pane's figures in words: every figure a label and a value ("util 37%",
//! "mem 12.1/80.0 GiB"), laid out into lines of a width without cutting one in two.

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

use crate::tui::theme::Theme;

pub use crate::system::labels::*;

/// A figure's spans: its label dim, its value in the text colour (a warning's bold).
fn figure_spans(f: &Figure, theme: &Theme) -> Vec<Span<'static>> {
    let value = if f.warn {
        Style::default().fg(theme.warn).add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(theme.text)
    };
    let mut out = Vec::new();
    if !f.label.is_empty() {
        out.push(Span::styled(
            format!("{} ", f.label),
            Style::default().fg(theme.dim),
        ));
    }
    out.push(Span::styled(f.value.clone(), value));
    out
}

/// The figures in lines of `width` columns: as many as fit on a line, two spaces apart; a
/// figure too wide for a line of its own is wrapped at its value's spaces (a word wider
/// than the line is cut with `~`).
pub fn lay_out(figures: &[Figure], width: usize, theme: &Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for f in figures {
        let w = f.width();
        if used > 0 && used + 2 + w > width {
            lines.push(Line::from(std::mem::take(&mut spans)));
            used = 0;
        }
        if w > width {
            lines.extend(
                wrap(f, width)
                    .iter()
                    .map(|p| Line::from(figure_spans(p, theme))),
            );
            continue;
        }
        if used > 0 {
            spans.push(Span::raw("  "));
            used += 2;
        }
        spans.extend(figure_spans(f, theme));
        used += w;
    }
    if !spans.is_empty() {
        lines.push(Line::from(spans));
    }
    lines
}

/// A figure wider than `width` in pieces of at most `width`, split at its value's spaces;
/// the first piece keeps the label.
fn wrap(f: &Figure, width: usize) -> Vec<Figure> {
    let mut pieces = Vec::new();
    let mut piece = Figure {
        value: String::new(),
        ..f.clone()
    };
    for word in f.value.split(' ') {
        let sep = usize::from(!piece.value.is_empty());
        let fits = piece.width() + sep + word.chars().count() <= width;
        if !fits && (!piece.value.is_empty() || !piece.label.is_empty()) {
            pieces.push(std::mem::replace(
                &mut piece,
                Figure {
                    label: String::new(),
                    value: String::new(),
                    warn: f.warn,
                },
            ));
        }
        if !piece.value.is_empty() {
            piece.value.push(' ');
        }
        let room = width.saturating_sub(piece.width());
        piece.value.push_str(&crate::tui::widgets::clip(word, room));
    }
    pieces.push(piece);
    pieces
}

/// The figures on one line of `width`: two spaces apart, else one, else the leading ones
/// that fit (the later figures are the less needed).
pub fn one_line(lead: &str, figures: &[Figure], width: usize, theme: &Theme) -> Line<'static> {
    let lead_w = lead.chars().count();
    let total =
        |gap: usize, n: usize| lead_w + figures[..n].iter().map(|f| f.width() + gap).sum::<usize>();
    let (gap, n) = if total(2, figures.len()) <= width {
        (2, figures.len())
    } else {
        let n = (0..=figures.len())
            .rev()
            .find(|&n| total(1, n) <= width)
            .unwrap_or(0);
        (1, n)
    };
    let mut spans = vec![Span::styled(
        lead.to_string(),
        Style::default()
            .fg(theme.accent)
            .add_modifier(Modifier::BOLD),
    )];
    for f in &figures[..n] {
        spans.push(Span::raw(" ".repeat(gap)));
        spans.extend(figure_spans(f, theme));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::GpuProcess;

    fn text(l: &Line) -> String {
        l.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn sizes_and_figures_read_as_words() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(512 << 20), "512 MiB");
        assert_eq!(size(1_900_000_000_000), "1.7 TiB");
        assert_eq!(gib(13_000_000_000), "12.1");
        let p = GpuProcess {
            pid: 42,
            memory_bytes: Some(3 << 30),
            run: Some("tiny-1".into()),
        };
        assert_eq!(process_figure(&p).value, "run tiny-1 3.0 GiB");
        let other = GpuProcess {
            run: None,
            memory_bytes: None,
            ..p
        };
        assert_eq!(process_figure(&other).value, "other");
    }

    #[test]
    fn figures_wrap_whole_and_one_line_drops_the_last_ones() {
        let t = Theme::default_theme();
        let figs = vec![
            Figure::new("util", "37%"),
            Figure::new("mem", "12.1/80.0 GiB"),
            Figure::new("temp", "61°C"),
        ];
        let lines = lay_out(&figs, 22, &t);
        let lines: Vec<String> = lines.iter().map(text).collect();
        assert_eq!(lines, ["util 37%", "mem 12.1/80.0 GiB", "temp 61°C"]);
        assert_eq!(
            text(&lay_out(&figs, 80, &t)[0]),
            "util 37%  mem 12.1/80.0 GiB  temp 61°C"
        );
        // Too wide for a line: wrapped at spaces, a word too wide cut at the width.
        let long = [Figure::new("", "/a/very/long/path/to/checkpoints")];
        assert_eq!(text(&lay_out(&long, 10, &t)[0]), "/a/very/l~");
        let warn = [Figure::new("! ck:", "the next checkpoint will not fit")];
        let lines: Vec<String> = lay_out(&warn, 16, &t).iter().map(text).collect();
        assert_eq!(lines, ["! ck: the next", "checkpoint will", "not fit"]);
        assert_eq!(
            text(&one_line("GPU 0", &figs, 80, &t)),
            "GPU 0  util 37%  mem 12.1/80.0 GiB  temp 61°C"
        );
        assert_eq!(
            text(&one_line("GPU 0", &figs, 36, &t)),
            "GPU 0 util 37% mem 12.1/80.0 GiB"
        );
    }
}
