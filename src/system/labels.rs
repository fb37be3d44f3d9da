//! The machine's figures in words, each a label and a value ("util 37%", "mem 12.1/80.0
//! GiB"): the System pane lays them out, `doctor` prints them.

use super::{DiskFigures, GpuFigures, GpuProcess, HostFigures};

/// `512B`, `4.0K`, `12M`, `1.5G`, powers of 1024 as `du -h` writes them (at most 5 characters).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 9.95 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{}{}", v.round() as u64, UNITS[unit])
    }
}

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

    /// Columns it takes: `label value`.
    pub fn width(&self) -> usize {
        let v = unicode_width::UnicodeWidthStr::width(self.value.as_str());
        if self.label.is_empty() {
            v
        } else {
            self.label.chars().count() + 1 + v
        }
    }
}

/// Bytes in GiB with one decimal: `12.1`.
pub fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 30) as f64)
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
