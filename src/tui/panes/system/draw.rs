//! Drawing the System pane. Three blocks, top to bottom: the GPUs, the host, the lab.
//! Where the height allows, each GPU takes three lines (figures, a minute of utilisation
//! and memory as sparklines, its processes); else one line of figures. The host block
//! shortens its figures on narrow terminals; the lab block takes what is left, if anything.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::bar;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline, Wrap};
use ratatui::Frame;

use super::figures::{self, Figure};
use super::SystemPane;
use crate::system::sampler::{GpuHistory, Snapshot};
use crate::system::{GpuFigures, NoGpus, Sample};
use crate::tui::theme::Theme;
use crate::tui::widgets::block;

/// Inner width from which GPUs get sparklines and the host its full figures.
const RICH_WIDTH: usize = 90;
/// Lines per GPU with sparklines: figures, history, processes.
const RICH_LINES: u16 = 3;
/// The lab block's height (three lines and the borders), drawn only when it fits whole.
const LAB_HEIGHT: u16 = 5;

/// ASCII bars for sparklines (`--ascii`): the eighths by height.
const ASCII_BARS: bar::Set<'static> = bar::Set {
    full: "#",
    seven_eighths: "#",
    three_quarters: "=",
    five_eighths: "=",
    half: "-",
    three_eighths: "-",
    one_quarter: "_",
    one_eighth: "_",
    empty: " ",
};

pub fn draw(f: &mut Frame, area: Rect, pane: &SystemPane, snap: &Snapshot, theme: &Theme) {
    let inner_w = area.width.saturating_sub(2) as usize;
    let rich = inner_w >= RICH_WIDTH;
    let host = host_lines(snap, inner_w, rich, theme);
    let host_h = (host.lines.len() as u16 + 2).min(area.height / 2);
    let room = area.height.saturating_sub(host_h);
    let gpus = snap.latest.as_ref().map(|s| &s.gpus);
    let n = match gpus {
        Some(Ok(g)) => g.len() as u16,
        _ => 0,
    };
    let with_history = rich && n > 0 && n * RICH_LINES + 2 <= room;
    let gpu_h = match gpus {
        Some(Ok(_)) if with_history => n * RICH_LINES + 2,
        Some(Ok(_)) => n + 2,
        Some(Err(why)) => no_gpu_height(why, inner_w),
        None => 3,
    }
    .min(room);
    let lab_h = if room - gpu_h >= LAB_HEIGHT {
        room - gpu_h
    } else {
        0
    };
    let [gpu_area, host_area, lab_area] = Layout::vertical([
        Constraint::Length(gpu_h),
        Constraint::Length(host_h),
        Constraint::Length(lab_h),
    ])
    .areas(area);
    let title = gpu_title(snap, inner_w);
    let gpu_block = block(&title, theme);
    let inner = gpu_block.inner(gpu_area);
    f.render_widget(gpu_block, gpu_area);
    match snap.latest.as_ref() {
        None => f.render_widget(
            Paragraph::new(dim("waiting for the first sample", theme)),
            inner,
        ),
        Some(Sample { gpus: Err(why), .. }) => no_gpus(f, inner, why, theme),
        Some(Sample { gpus: Ok(g), .. }) if with_history => {
            rich_gpus(f, inner, g, &snap.gpu_history, theme)
        }
        Some(Sample { gpus: Ok(g), .. }) => compact_gpus(f, inner, g, theme),
    }
    let host_block = block("host", theme);
    let inner = host_block.inner(host_area);
    f.render_widget(host_block, host_area);
    draw_host(f, inner, host, snap, theme);
    if lab_h > 0 {
        let figs = lab_figures(pane);
        let lines: Vec<Line> = [&figs[..2], &figs[2..3], &figs[3..]]
            .iter()
            .flat_map(|group| figures::lay_out(group, inner_w, theme))
            .collect();
        f.render_widget(Paragraph::new(lines).block(block("lab", theme)), lab_area);
    }
}

fn dim(s: &str, theme: &Theme) -> Line<'static> {
    Line::from(Span::styled(s.to_string(), Style::default().fg(theme.dim)))
}

/// "GPUs · NVML 12.550.54, driver 550.54.15 · every 1 s", or less of it where narrow.
fn gpu_title(snap: &Snapshot, width: usize) -> String {
    let every = format!("every {} s", snap.interval.as_secs().max(1));
    let full = format!("GPUs · {} · {every}", snap.source);
    if !snap.source.is_empty() && full.chars().count() + 4 <= width {
        full
    } else {
        "GPUs".into()
    }
}

fn no_gpu_text(why: &NoGpus) -> String {
    format!("no GPU figures: {why}")
}

/// The lines the reason takes at `width` (with a line's slack for word wrapping) and the
/// borders.
fn no_gpu_height(why: &NoGpus, width: usize) -> u16 {
    let chars = no_gpu_text(why).chars().count();
    let lines = chars.div_ceil(width.max(1));
    (lines + usize::from(lines > 1) + 2) as u16
}

fn no_gpus(f: &mut Frame, area: Rect, why: &NoGpus, theme: &Theme) {
    let line = Line::from(vec![
        Span::styled(
            "no GPU figures: ",
            Style::default().fg(theme.warn).add_modifier(Modifier::BOLD),
        ),
        Span::styled(why.to_string(), Style::default().fg(theme.text)),
    ]);
    f.render_widget(Paragraph::new(line).wrap(Wrap { trim: true }), area);
}

fn row(area: Rect, i: u16) -> Rect {
    Rect {
        y: area.y + i,
        height: 1,
        ..area
    }
}

/// One line per GPU; the GPUs that do not fit are counted on the last line.
fn compact_gpus(f: &mut Frame, area: Rect, gpus: &[GpuFigures], theme: &Theme) {
    let fits = area.height as usize;
    let shown = if gpus.len() > fits {
        fits.saturating_sub(1)
    } else {
        gpus.len()
    };
    for (i, g) in gpus.iter().take(shown).enumerate() {
        let figs = figures::gpu_figures(g, true, theme.ascii);
        let line = figures::one_line(
            &format!("GPU {}", g.index),
            &figs,
            area.width as usize,
            theme,
        );
        f.render_widget(Paragraph::new(line), row(area, i as u16));
    }
    if shown < gpus.len() {
        let more = format!(
            "+{} more GPUs: a taller terminal shows them",
            gpus.len() - shown
        );
        f.render_widget(Paragraph::new(dim(&more, theme)), row(area, shown as u16));
    }
}

/// Three lines per GPU: figures, sparklines of the last minute, processes and their runs.
fn rich_gpus(f: &mut Frame, area: Rect, gpus: &[GpuFigures], hist: &[GpuHistory], theme: &Theme) {
    let width = area.width as usize;
    let empty = GpuHistory::default();
    for (i, g) in gpus.iter().enumerate() {
        let y = i as u16 * RICH_LINES;
        if y + RICH_LINES > area.height {
            break;
        }
        let mut figs = figures::gpu_figures(g, false, theme.ascii);
        if let Some(bus) = &g.bus_id {
            figs.push(Figure::new("bus", bus.clone()));
        }
        let lead = format!("GPU {} {}", g.index, g.name);
        f.render_widget(
            Paragraph::new(figures::one_line(&lead, &figs, width, theme)),
            row(area, y),
        );
        let h = hist.get(i).unwrap_or(&empty);
        let [util, mem] = Layout::horizontal([Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)])
            .areas(row(area, y + 1));
        sparkline(f, util, "  util, last minute", &h.utilization, theme);
        sparkline(f, mem, "  mem, last minute", &h.memory, theme);
        let mut procs = vec![Figure::new("processes", g.processes.len().to_string())];
        procs.extend(g.processes.iter().map(figures::process_figure));
        f.render_widget(
            Paragraph::new(figures::one_line("", &procs, width, theme)),
            row(area, y + 2),
        );
    }
}

/// A labelled sparkline of percents (0 to 100), the newest on the right.
fn sparkline(
    f: &mut Frame,
    area: Rect,
    label: &str,
    data: &std::collections::VecDeque<u64>,
    theme: &Theme,
) {
    let label_w = label.chars().count() as u16 + 1;
    let [l, s] = Layout::horizontal([Constraint::Length(label_w), Constraint::Min(1)]).areas(area);
    f.render_widget(Paragraph::new(dim(label, theme)), l);
    let n = (s.width as usize).saturating_sub(1);
    let recent: Vec<u64> = data
        .iter()
        .skip(data.len().saturating_sub(n))
        .copied()
        .collect();
    let bars = if theme.ascii {
        ASCII_BARS
    } else {
        bar::NINE_LEVELS
    };
    let style = if theme.no_color {
        Style::default()
    } else {
        Style::default().fg(theme.accent)
    };
    f.render_widget(
        Sparkline::default()
            .data(&recent)
            .max(100)
            .bar_set(bars)
            .style(style),
        s,
    );
}

/// The host's lines: CPU and memory, each folder's free space, the warnings; and where
/// rich, the line left blank for the CPU's sparkline.
struct HostLines {
    lines: Vec<Line<'static>>,
    cpu_row: Option<u16>,
}

fn host_lines(snap: &Snapshot, width: usize, rich: bool, theme: &Theme) -> HostLines {
    let Some(s) = &snap.latest else {
        return HostLines {
            lines: vec![dim("waiting for the first sample", theme)],
            cpu_row: None,
        };
    };
    let mut lines = figures::lay_out(&figures::host_figures(&s.host, !rich), width, theme);
    let cpu_row = rich.then_some(lines.len() as u16);
    if rich {
        lines.push(Line::default());
    }
    for d in &s.host.disks {
        let mut figs = figures::disk_figures(d);
        if !rich {
            figs.truncate(1);
        }
        lines.extend(figures::lay_out(&figs, width, theme));
    }
    for d in s.host.disks.iter().filter(|d| d.warning.is_some()) {
        let mut w = Figure::new(
            &format!("! {}:", d.label),
            d.warning.clone().unwrap_or_default(),
        );
        w.warn = true;
        lines.extend(figures::lay_out(&[w], width, theme));
    }
    HostLines { lines, cpu_row }
}

fn draw_host(f: &mut Frame, area: Rect, host: HostLines, snap: &Snapshot, theme: &Theme) {
    f.render_widget(Paragraph::new(host.lines), area);
    if let Some(y) = host.cpu_row.filter(|&y| y < area.height) {
        let r = row(area, y);
        let half = Rect {
            width: r.width / 2,
            ..r
        };
        sparkline(f, half, "CPU busy, last minute", &snap.cpu_history, theme);
    }
}

/// The lab's own facts: version, device, the embedded corpus, the configs.
fn lab_figures(p: &SystemPane) -> Vec<Figure> {
    let corpus = match &p.dataset {
        Some(ds) => format!(
            "Shakespeare, {} train / {} val tokens, BPE vocabulary {}",
            ds.info.train_tokens, ds.info.val_tokens, ds.info.vocab_size
        ),
        None => "not prepared".into(),
    };
    vec![
        Figure::new("stacklab", env!("CARGO_PKG_VERSION")),
        Figure::new("device", p.device.clone()),
        Figure::new("embedded corpus", corpus),
        Figure::new("configs", p.configs.join(", ")),
    ]
}
