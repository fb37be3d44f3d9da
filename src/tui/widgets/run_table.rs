//! The list of runs: state, step / total, last losses, tokens/s, age and, when the width
//! allows, size on disk, device and GPU memory.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Row, Table, TableState};
use ratatui::Frame;

use super::{block, clip, selected_style};
use crate::runs::disk::format_size;
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
    /// Bytes the run's folder takes on disk (none for a queued run without a folder).
    pub size_bytes: Option<u64>,
    pub pinned: bool,
    /// The device it trains on (`cpu`, `cuda:0`) or is queued for.
    pub device: Option<String>,
    /// Device memory its processes use, from the latest GPU sample.
    pub gpu_memory: Option<u64>,
}

/// Widths from which the table adds columns: train loss and tokens/s from `WIDE`, size
/// from `SIZED_NARROW` (narrow) and `SIZED_WIDE` (wide), device and GPU memory from
/// `GPU_NARROW` and `GPU_WIDE` (where the run's name keeps 16 columns beside them).
pub const WIDE: u16 = 78;
pub const SIZED_NARROW: u16 = 56;
pub const SIZED_WIDE: u16 = 86;
pub const GPU_NARROW: u16 = 77;
pub const GPU_WIDE: u16 = 101;
/// Columns the device and GPU memory take, with their gaps.
const GPU_COLUMNS: usize = 17;

/// A device label in few columns: `cuda:1,cuda:3` (a run in two processes) is `cuda:1,3`.
pub fn short_devices(label: &str) -> String {
    let mut out = String::new();
    for (i, d) in crate::device::slots::devices_of(label).enumerate() {
        if i > 0 {
            out.push(',');
            out.push_str(d.strip_prefix("cuda:").unwrap_or(d));
        } else {
            out.push_str(d);
        }
    }
    out
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
    let cols = Columns::for_width(area.width);
    let table = if rows.is_empty() {
        Table::new(
            vec![Row::new(vec![Span::styled(
                "no runs: n starts one from a config",
                Style::default().fg(theme.dim),
            )])],
            [Constraint::Min(10)],
        )
    } else {
        let name_w = cols.name_width(area.width);
        let body: Vec<Row> = rows
            .iter()
            .map(|r| Row::new(cols.cells(r, name_w, theme)))
            .collect();
        Table::new(body, cols.widths())
            .header(cols.header(theme))
            .row_highlight_style(selected_style(theme))
    };
    f.render_stateful_widget(table.block(block(title, theme)), area, state);
}

/// Which columns a width shows: train loss and tokens/s when wide, size when sized, device
/// and GPU memory with `gpu`.
struct Columns {
    wide: bool,
    sized: bool,
    gpu: bool,
}

impl Columns {
    fn for_width(width: u16) -> Columns {
        let wide = width >= WIDE;
        let sized = width >= if wide { SIZED_WIDE } else { SIZED_NARROW };
        let gpu = width >= if wide { GPU_WIDE } else { GPU_NARROW };
        Columns { wide, sized, gpu }
    }

    fn header(&self, theme: &Theme) -> Row<'static> {
        let mut header: Vec<&str> = if self.wide {
            vec!["run", "state", "step", "train", "val", "tok/s", "age"]
        } else {
            vec!["run", "state", "step", "val", "age"]
        };
        if self.sized {
            header.push("size");
        }
        if self.gpu {
            header.extend(["device", "GPU mem"]);
        }
        Row::new(header).style(
            Style::default()
                .fg(theme.accent)
                .add_modifier(Modifier::BOLD),
        )
    }

    /// The characters a run's name may take: what the other columns leave.
    fn name_width(&self, width: u16) -> usize {
        let gpu = if self.gpu { GPU_COLUMNS } else { 0 };
        (width as usize)
            .saturating_sub(if self.wide { 62 } else { 38 } + if self.sized { 6 } else { 0 } + gpu)
            .clamp(8, 40)
    }

    fn cells(&self, r: &RunRow, name_w: usize, theme: &Theme) -> Vec<Span<'static>> {
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
        let age = Span::styled(
            r.age_s.map(age).unwrap_or_else(|| "-".into()),
            Style::default().fg(theme.dim),
        );
        let val = Span::raw(series::loss(r.val_loss));
        let mut cells: Vec<Span> = if self.wide {
            vec![
                name,
                state,
                Span::raw(step),
                Span::raw(series::loss(r.train_loss)),
                val,
                Span::raw(series::rate(r.tokens_per_s)),
                age,
            ]
        } else {
            vec![name, state, Span::raw(step), val, age]
        };
        if self.sized {
            let size = r.size_bytes.map(format_size).unwrap_or_else(|| "-".into());
            cells.push(Span::styled(size, Style::default().fg(theme.dim)));
        }
        if self.gpu {
            let dash = || "-".to_string();
            let device = r.device.as_deref().map(short_devices).unwrap_or_else(dash);
            cells.push(Span::raw(clip(&device, 8)));
            let mem = r.gpu_memory.map(format_size).unwrap_or_else(dash);
            cells.push(Span::styled(mem, Style::default().fg(theme.dim)));
        }
        cells
    }

    fn widths(&self) -> Vec<Constraint> {
        let mut widths: Vec<Constraint> = if self.wide {
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
        if self.sized {
            widths.push(Constraint::Length(5));
        }
        if self.gpu {
            widths.extend([Constraint::Length(8), Constraint::Length(7)]);
        }
        widths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::widgets::testing::render;

    #[test]
    fn several_gpus_are_one_short_label() {
        assert_eq!(short_devices("cuda:1,cuda:3"), "cuda:1,3");
        assert_eq!(short_devices("cuda:12"), "cuda:12");
        assert_eq!(short_devices("cpu"), "cpu");
    }

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
                size_bytes: Some(13 * 1024 * 1024),
                pinned: true,
                device: Some("cpu".into()),
                gpu_memory: None,
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
                size_bytes: Some(300 * 1024),
                pinned: false,
                device: Some("cuda:1".into()),
                gpu_memory: Some(3 << 30),
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
                size_bytes: None,
                pinned: false,
                device: None,
                gpu_memory: None,
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
        assert!(
            line(&s, "model1").contains("2h   13M ") && line(&s, "broken").contains(" -    -  "),
            "size after age when 60 wide:\n{s}"
        );
        // Wide enough for every column; the size goes where there is no room for it.
        let mut table = |w| {
            render(w, 8, |f| {
                draw(
                    f,
                    f.area(),
                    &rows(),
                    &mut st,
                    "runs",
                    &Theme::shipped_default(),
                )
            })
        };
        let s = table(90);
        assert!(
            s.contains("tok/s") && s.contains("size") && line(&s, "model2").contains("300K"),
            "{s}"
        );
        let s = table(80);
        assert!(
            s.contains("tok/s") && !s.contains("size") && !s.contains("13M"),
            "{s}"
        );
        let s = table(50);
        assert!(
            s.contains("model2") && !s.contains("size") && !s.contains("13M"),
            "{s}"
        );
        // Device and GPU memory where there is room for them and 16 columns of the name.
        for w in [110, 140] {
            let s = table(w);
            assert!(s.contains("device") && s.contains("GPU mem"), "{w}:\n{s}");
            let m2 = line(&s, "model2");
            assert!(m2.contains("cuda:1") && m2.contains("3.0G"), "{w}:\n{s}");
            assert!(line(&s, "model1").contains("cpu"), "{w}:\n{s}");
        }
        for w in [66, 76, 90] {
            assert!(!table(w).contains("GPU mem"), "{w}");
        }
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

    fn line<'a>(s: &'a str, name: &str) -> &'a str {
        s.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name}:\n{s}"))
    }
}
