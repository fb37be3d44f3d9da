//! The host's figures: CPU load (`/proc/loadavg`, and the share of time busy from
//! `/proc/stat` between two samples), memory (`/proc/meminfo`) and the free space of the
//! checkpoint and data folders (`statvfs`), with a warning while the checkpoint folder has
//! room for fewer than two more checkpoints the size of its largest.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::labels::format_size;
use super::Folders;

/// How often the checkpoint folder is walked for its largest checkpoint.
const CHECKPOINT_SCAN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostFigures {
    pub cpu_cores: usize,
    /// Load averages over 1, 5 and 15 minutes.
    pub load_average: Option<[f64; 3]>,
    /// Percent of the CPUs' time busy since the previous sample (none at the first).
    pub cpu_busy_percent: Option<f64>,
    /// Memory in use: total less what the kernel says is available.
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub disks: Vec<DiskFigures>,
}

/// A folder's file system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskFigures {
    /// `checkpoints` or `data`.
    pub label: String,
    pub path: String,
    /// Bytes an unprivileged process may still write.
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// The largest newest checkpoint of any run (the checkpoint folder only).
    pub largest_checkpoint_bytes: Option<u64>,
    pub warning: Option<String>,
}

/// The warning for a checkpoint folder with `free` bytes whose largest checkpoint takes
/// `checkpoint`: when the next one will not fit, or only one more will.
pub fn fit_warning(free: u64, checkpoint: u64) -> Option<String> {
    if checkpoint == 0 || free >= checkpoint.saturating_mul(2) {
        return None;
    }
    Some(if free < checkpoint {
        format!(
            "the next checkpoint (about {}) will not fit: {} free",
            format_size(checkpoint),
            format_size(free)
        )
    } else {
        format!(
            "room for one more checkpoint of about {} ({} free)",
            format_size(checkpoint),
            format_size(free)
        )
    })
}

/// Free and total bytes of the file system holding `path` (or its nearest existing parent:
/// a checkpoint dir not created yet).
pub fn free_space(path: &Path) -> Option<(u64, u64)> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct from a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let unit = s.f_frsize as u64;
    Some((s.f_bavail as u64 * unit, s.f_blocks as u64 * unit))
}

/// The three load averages of `/proc/loadavg`'s text.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// (used, total) bytes from `/proc/meminfo`'s text: MemTotal less MemAvailable.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((total.saturating_sub(available), total))
}

/// (busy, total) jiffies of all CPUs from `/proc/stat`'s text (idle and iowait are not busy).
pub fn parse_cpu_times(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Samples the host; keeps what the next sample needs (the CPU times, the checkpoint size).
pub struct HostProbe {
    folders: Folders,
    cpu_times: Option<(u64, u64)>,
    largest: Option<u64>,
    scanned: Option<Instant>,
}

impl HostProbe {
    /// Reads the CPU times now, so the first sample's busy figure covers the time since.
    pub fn new(folders: Folders) -> HostProbe {
        HostProbe {
            folders,
            cpu_times: cpu_times(),
            largest: None,
            scanned: None,
        }
    }

    pub fn sample(&mut self) -> HostFigures {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let times = cpu_times();
        let busy = match (self.cpu_times, times) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some(b1.saturating_sub(b0) as f64 * 100.0 / (t1 - t0) as f64)
            }
            _ => None,
        };
        self.cpu_times = times.or(self.cpu_times);
        let memory = read("/proc/meminfo").as_deref().and_then(parse_meminfo);
        if self
            .scanned
            .is_none_or(|t| t.elapsed() >= CHECKPOINT_SCAN_EVERY)
        {
            self.largest = (self.folders.largest_checkpoint)(&self.folders.checkpoints);
            self.scanned = Some(Instant::now());
        }
        let checkpoints = disk("checkpoints", &self.folders.checkpoints, self.largest);
        let data = disk("data", &self.folders.data, None);
        HostFigures {
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average: read("/proc/loadavg").as_deref().and_then(parse_loadavg),
            cpu_busy_percent: busy,
            memory_used_bytes: memory.map(|m| m.0),
            memory_total_bytes: memory.map(|m| m.1),
            disks: vec![checkpoints, data],
        }
    }
}

fn cpu_times() -> Option<(u64, u64)> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn disk(label: &str, path: &Path, largest: Option<u64>) -> DiskFigures {
    // Absolute first: a relative folder not created yet is measured on its nearest
    // existing parent, which its own relative path does not reach.
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let space = free_space(&abs);
    DiskFigures {
        label: label.into(),
        path: abs.display().to_string(),
        free_bytes: space.map(|s| s.0),
        total_bytes: space.map(|s| s.1),
        largest_checkpoint_bytes: largest,
        warning: match (space, largest) {
            (Some((free, _)), Some(l)) => fit_warning(free, l),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_folder_warns_before_the_next_checkpoint_would_not_fit() {
        let g = 1u64 << 30;
        assert_eq!(fit_warning(10 * g, g), None);
        assert_eq!(fit_warning(2 * g, g), None);
        let w = fit_warning(g + g / 2, g).unwrap();
        assert_eq!(w, "room for one more checkpoint of about 1.0G (1.5G free)");
        let w = fit_warning(g / 2, g).unwrap();
        assert_eq!(
            w,
            "the next checkpoint (about 1.0G) will not fit: 512M free"
        );
        assert_eq!(fit_warning(0, 0), None, "no checkpoint yet: nothing to fit");
    }

    #[test]
    fn the_probe_measures_the_folders_and_asks_the_lab_for_its_largest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let largest = 300_000;
        let (free, total) = free_space(root).unwrap();
        assert!(free <= total && total > 0);
        // A folder not created yet is measured on its nearest existing parent.
        assert!(free_space(&root.join("not/yet")).is_some());
        let mut probe = HostProbe::new(Folders {
            largest_checkpoint: |_| Some(300_000),
            ..Folders::new(root.to_path_buf(), root.join("data"))
        });
        let h = probe.sample();
        assert_eq!(h.disks[0].largest_checkpoint_bytes, Some(largest));
        assert_eq!(h.disks[1].label, "data");
        assert!(h.memory_total_bytes.unwrap() > 0);
        assert!(
            Path::new(&h.disks[0].path).is_absolute(),
            "{:?}",
            h.disks[0]
        );
        // Busy while measured: the share is above nothing and at most everything.
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(t0.elapsed());
        }
        let busy = probe.sample().cpu_busy_percent.unwrap();
        assert!(busy > 0.0 && busy <= 100.0, "{busy}");
    }

    #[test]
    fn proc_files_parse_and_garbage_gives_nothing() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.5 x"), None);
        let mem = "MemTotal:       16384000 kB\nMemFree:  100 kB\nMemAvailable:    4096000 kB\n";
        assert_eq!(
            parse_meminfo(mem),
            Some((12_288_000 * 1024, 16_384_000 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: lots\n"), None);
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_cpu_times(stat), Some((150, 1000)));
        assert_eq!(parse_cpu_times("cpu 1 2\n"), None);
        assert_eq!(parse_cpu_times(""), None);
    }
}
