//! The System pane's figures in words: every figure a label and a value ("util 37%",
//! "mem 12.1/80.0 GiB"), laid out into lines of a width without cutting one in two.

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

use crate::system::{DiskFigures, GpuFigures, GpuProcess, HostFigures};
use crate::tui::theme::Theme;

/// A labelled figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub label: String,
    pub value: String,
    /// Shown as a warning (colour, and bold for terminals without colour).
    pub warn: bool,
}

impl Figure {
    pub fn new(label: &str, value: impl Into<String>) -> Figure {
        Figure {
            label: label.into(),
            value: value.into(),
            warn: false,
        }
    }

    fn width(&self) -> usize {
        let v = unicode_width::UnicodeWidthStr::width(self.value.as_str());
        if self.label.is_empty() {
            v
        } else {
            self.label.chars().count() + 1 + v
        }
    }

    fn spans(&self, theme: &Theme) -> Vec<Span<'static>> {
        let value = if self.warn {
            Style::default().fg(theme.warn).add_modifier(Modifier::BOLD)
        } else {
            Style::default().fg(theme.text)
        };
        let mut out = Vec::new();
        if !self.label.is_empty() {
            out.push(Span::styled(
                format!("{} ", self.label),
                Style::default().fg(theme.dim),
            ));
        }
        out.push(Span::styled(self.value.clone(), value));
        out
    }
}

/// Bytes in GiB with one decimal: `12.1`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / crate::device::GIB)
}

/// Bytes in the largest unit that keeps a figure before the point: `512 MiB`, `1.8 TiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 100.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

fn or_dash<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// A GPU's figures: utilisation, memory, temperature, power. `compact` drops the spaces
/// before units and the total's decimal.
pub fn gpu_figures(g: &GpuFigures, compact: bool, ascii: bool) -> Vec<Figure> {
    let sp = if compact { "" } else { " " };
    // Compact lines stack up: numbers padded, so figures line up in columns.
    let pad = |v: u32, w: usize| {
        if compact {
            format!("{v:>w$}")
        } else {
            v.to_string()
        }
    };
    let mem = match (g.memory_used_bytes, g.memory_total_bytes) {
        (Some(u), Some(t)) if compact => {
            format!("{:>5}/{:.0}GiB", gib(u), t as f64 / crate::device::GIB)
        }
        (Some(u), Some(t)) => format!("{}/{} GiB", gib(u), gib(t)),
        _ => "-".into(),
    };
    let degrees = if ascii { "C" } else { "°C" };
    let power = match (g.power_w, g.power_limit_w) {
        (Some(p), Some(l)) => format!("{p:.0}/{l:.0}{sp}W"),
        (Some(p), None) => format!("{p:.0}{sp}W"),
        _ => "-".into(),
    };
    vec![
        Figure::new(
            "util",
            or_dash(g.utilization_percent, |u| format!("{}%", pad(u, 3))),
        ),
        Figure::new("mem", mem),
        Figure::new(
            "temp",
            or_dash(g.temperature_c, |t| format!("{}{degrees}", pad(t, 2))),
        ),
        Figure::new("power", power),
    ]
}

/// A process on a GPU: its pid, its run (or `other`), its memory.
pub fn process_figure(p: &GpuProcess) -> Figure {
    let who = match &p.run {
        Some(run) => format!("run {run}"),
        None => "other".into(),
    };
    let mem = p.memory_bytes.map(|b| format!(" {} GiB", gib(b)));
    Figure::new(
        &format!("pid {}", p.pid),
        format!("{who}{}", mem.unwrap_or_default()),
    )
}

/// The CPU and memory figures; `compact` keeps the 1-minute load only.
pub fn host_figures(h: &HostFigures, compact: bool) -> Vec<Figure> {
    let load = match h.load_average {
        Some([a, _, _]) if compact => format!("{a:.2} (1 min)"),
        Some([a, b, c]) => format!("{a:.2} {b:.2} {c:.2} (1/5/15 min)"),
        None => "-".into(),
    };
    let mem = match (h.memory_used_bytes, h.memory_total_bytes) {
        (Some(u), Some(t)) => format!("{}/{} GiB", gib(u), gib(t)),
        _ => "-".into(),
    };
    vec![
        Figure::new(
            "CPU busy",
            or_dash(h.cpu_busy_percent, |b| format!("{b:.0}%")),
        ),
        Figure::new("load", load),
        Figure::new("cores", h.cpu_cores.to_string()),
        Figure::new("memory", mem),
    ]
}

/// A folder's free space, then its warning when it has one.
pub fn disk_figures(d: &DiskFigures) -> Vec<Figure> {
    let free = match (d.free_bytes, d.total_bytes) {
        (Some(f), Some(t)) => format!("{} of {}", size(f), size(t)),
        _ => "-".into(),
    };
    let mut out = vec![Figure::new(&format!("{} free", d.label), free)];
    if let Some(l) = d.largest_checkpoint_bytes {
        out.push(Figure::new("largest checkpoint", size(l)));
    }
    out.push(Figure::new("folder", d.path.clone()));
    out
}

/// The figures as plain text, `label value` comma-separated (for `doctor`).
pub fn plain(figures: &[Figure]) -> String {
    figures
        .iter()
        .map(|f| {
            if f.label.is_empty() {
                f.value.clone()
            } else {
                format!("{} {}", f.label, f.value)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
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
            lines.extend(wrap(f, width).iter().map(|p| Line::from(p.spans(theme))));
            continue;
        }
        if used > 0 {
            spans.push(Span::raw("  "));
            used += 2;
        }
        spans.extend(f.spans(theme));
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
        spans.extend(f.spans(theme));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

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
