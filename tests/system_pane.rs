//! The System pane drawn with ratatui's `TestBackend` from the fake GPU source: eight GPUs at
//! 160x48 (sparklines, processes with their runs, the host, the lab) and at the minimum
//! 60x20 (a line per GPU), in ASCII and without colours; a machine without GPUs says why.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;
use stacklab::runs::run_dir::{RunDir, RunState, RunStatus};
use stacklab::system::fake::FakeSource;
use stacklab::system::host::fit_warning;
use stacklab::system::sampler::{Monitor, Snapshot};
use stacklab::system::{DiskFigures, GpuSource, HostFigures, NoGpus, Sample};
use stacklab::tui::app::App;
use stacklab::tui::panes::system::SystemPane;
use stacklab::tui::theme::{ColorMode, Theme};

const GIB: u64 = 1 << 30;

fn host() -> HostFigures {
    let disk = |label: &str, free: u64, largest: Option<u64>| DiskFigures {
        label: label.into(),
        path: format!("/srv/{label}"),
        free_bytes: Some(free),
        total_bytes: Some(1800 * GIB),
        largest_checkpoint_bytes: largest,
        warning: largest.and_then(|l| fit_warning(free, l)),
    };
    HostFigures {
        cpu_cores: 16,
        load_average: Some([0.52, 0.58, 0.59]),
        cpu_busy_percent: Some(23.0),
        memory_used_bytes: Some(452 * GIB / 10),
        memory_total_bytes: Some(1256 * GIB / 10),
        disks: vec![
            disk("checkpoints", 3 * GIB / 2, Some(GIB)),
            disk("data", 120 * GIB, None),
        ],
    }
}

/// A training run under `root` whose process is this test's (alive, so it is running).
fn running_run(root: &Path, name: &str) {
    let run = RunDir::new(root.join(name));
    std::fs::create_dir_all(&run.path).unwrap();
    run.write_status(&RunStatus {
        state: RunState::Running,
        pid: std::process::id(),
        step: 1,
        total_steps: 10,
        message: String::new(),
        updated_at: String::new(),
        start_time: stacklab::runs::process::own_start_time(),
        device: Some("cuda:0".into()),
        world_size: None,
    })
    .unwrap();
}

/// `samples` samples of `gpus` fake GPUs. GPU 0 holds a process of this test, whose run
/// `tiny-1` is running under `root`; GPU 1 a process of a child of this test (a run's
/// rank); GPU 2 pid 1, nobody's run.
fn snapshot(gpus: usize, samples: usize, root: &Path, child: u32) -> Snapshot {
    let mut src = FakeSource::new(gpus)
        .with_process(std::process::id(), 0)
        .with_process(child, 1)
        .with_process(1, 2);
    let mut snap = Snapshot {
        source: format!("fake: {gpus} GPUs (STACKLAB_FAKE_GPUS)"),
        interval: Duration::from_secs(1),
        ..Snapshot::default()
    };
    for _ in 0..samples {
        let mut g = src.sample();
        stacklab::runs::gpu_use::map_processes_to_runs(g.as_mut().unwrap(), root);
        snap.push(Sample {
            gpus: g,
            host: host(),
        });
    }
    snap
}

fn app(snap: Snapshot, theme: Theme) -> App {
    let pane = SystemPane::new(
        Monitor::fixed(snap),
        "cpu (2 threads)".into(),
        None,
        vec!["tiny".into(), "gpt2-small-seed".into()],
    );
    App::new(vec![Box::new(pane)], theme, "lab.log".into())
}

fn draw(app: &mut App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| app.draw(f)).unwrap();
    t.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn line<'a>(s: &'a str, has: &str) -> &'a str {
    s.lines()
        .find(|l| l.contains(has))
        .unwrap_or_else(|| panic!("no line with {has:?}:\n{s}"))
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The words of a screen's lines inside the borders, joined (wrapped text read whole).
fn words(s: &str) -> String {
    s.lines()
        .map(|l| l.trim_matches(|c: char| c == '│' || c == '|' || c.is_whitespace()))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Fixture {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        running_run(dir.path(), "tiny-1");
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        Fixture { dir, child }
    }

    fn snapshot(&self, gpus: usize, samples: usize) -> Snapshot {
        snapshot(gpus, samples, self.dir.path(), self.child.id())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn eight_gpus_at_160x48_have_figures_history_processes_and_runs() {
    let fx = Fixture::new();
    let snap = fx.snapshot(8, 30);
    let latest = snap.latest.clone().unwrap();
    let mut lab = app(snap, Theme::shipped_default());
    let s = text(&draw(&mut lab, 160, 48));
    eprintln!("{s}");
    assert!(
        s.contains("1 System") && s.contains("GPUs · fake: 8 GPUs"),
        "{s}"
    );
    for g in latest.gpu_list() {
        let l = line(&s, &format!("GPU {} Fake GPU 80GB", g.index));
        let used = g.memory_used_bytes.unwrap() as f64 / GIB as f64;
        for want in [
            format!("util {}%", g.utilization_percent.unwrap()),
            format!("mem {used:.1}/80.0 GiB"),
            format!("temp {}°C", g.temperature_c.unwrap()),
            format!("power {:.0}/700 W", g.power_w.unwrap()),
            format!("bus {}", g.bus_id.as_deref().unwrap()),
        ] {
            assert!(l.contains(&want), "GPU {}: {want} in {l}\n{s}", g.index);
        }
    }
    // Each GPU's minute of history: thirty samples make bars.
    let spark = line(&s, "util, last minute");
    assert!(spark.contains("mem, last minute"), "{spark}");
    assert!(spark.chars().any(|c| ('▁'..='█').contains(&c)), "{spark}");
    // Processes and their runs: this test's own pid is tiny-1's training, its child a
    // process of the same run, pid 1 nobody's.
    let me = std::process::id();
    let l = line(&s, &format!("pid {me} "));
    assert!(l.contains(&format!("pid {me} run tiny-1 3.0 GiB")), "{l}");
    let l = line(&s, &format!("pid {} ", fx.child.id()));
    assert!(
        l.contains("run tiny-1 3.0 GiB"),
        "a child of the run's process: {l}"
    );
    assert!(line(&s, "pid 1 ").contains("pid 1 other 3.0 GiB"), "{s}");
    // A GPU without processes says so on its third line.
    let lines: Vec<&str> = s.lines().collect();
    let gpu3 = lines.iter().position(|l| l.contains("GPU 3 Fake")).unwrap();
    assert!(lines[gpu3 + 2].contains("processes 0"), "{s}");
    assert!(lines[gpu3 - 1].contains("processes 1  pid 1 other"), "{s}");
    for want in [
        "CPU busy 23%",
        "load 0.52 0.58 0.59 (1/5/15 min)",
        "cores 16",
        "memory 45.2/125.6 GiB",
        "checkpoints free 1.5 GiB of 1.8 TiB",
        "largest checkpoint 1.0 GiB",
        "folder /srv/checkpoints",
        "data free 120 GiB of 1.8 TiB",
        "! checkpoints: room for one more checkpoint of about 1.0G (1.5G free)",
        "CPU busy, last minute",
        "device cpu (2 threads)",
        "configs tiny, gpt2-small-seed",
        "embedded corpus not prepared",
    ] {
        assert!(s.contains(want), "{want}:\n{s}");
    }
}

#[test]
fn eight_gpus_fit_60x20_one_line_each_and_more_are_counted() {
    let fx = Fixture::new();
    let snap = fx.snapshot(8, 3);
    let latest = snap.latest.clone().unwrap();
    let mut lab = app(snap, Theme::shipped_default());
    let s = text(&draw(&mut lab, 60, 20));
    eprintln!("{s}");
    for g in latest.gpu_list() {
        // Compact lines pad their numbers into columns: read them with single spaces.
        let l = squeeze(line(&s, &format!("GPU {} ", g.index)));
        for want in [
            format!("util {}%", g.utilization_percent.unwrap()),
            format!("temp {}°C", g.temperature_c.unwrap()),
            format!("power {:.0}/700W", g.power_w.unwrap()),
        ] {
            assert!(l.contains(&want), "{want} in {l}\n{s}");
        }
        assert!(l.contains("mem ") && l.contains("/80GiB"), "{l}");
    }
    for want in [
        "CPU busy 23%",
        "memory 45.2/125.6 GiB",
        "checkpoints free 1.5 GiB",
    ] {
        assert!(s.contains(want), "{want}:\n{s}");
    }
    let warning = "! checkpoints: room for one more checkpoint of about 1.0G (1.5G free)";
    assert!(words(&s).contains(warning), "{s}");
    // Sixteen GPUs do not fit: the ones that do, and a count of the rest.
    let mut app16 = app(fx.snapshot(16, 1), Theme::shipped_default());
    let s = text(&draw(&mut app16, 60, 20));
    let shown = (0..16)
        .filter(|i| s.contains(&format!("│GPU {i} ")))
        .count();
    assert!(shown >= 6, "{s}");
    assert!(s.contains(&format!("+{} more GPUs", 16 - shown)), "{s}");
}

#[test]
fn ascii_and_no_color_draw_the_same_figures() {
    let fx = Fixture::new();
    let mut theme = Theme::shipped_default();
    theme.ascii = true;
    for (w, h) in [(160, 48), (60, 20)] {
        let snap = fx.snapshot(8, 30);
        let t = snap.latest.as_ref().unwrap().gpu_list()[0]
            .temperature_c
            .unwrap();
        let mut a = app(snap, theme.clone());
        let s = text(&draw(&mut a, w, h));
        assert!(s.is_ascii(), "{w}x{h}:\n{s}");
        let unknown = s.replace("? help", "");
        assert!(
            !unknown.contains('?'),
            "no character without a stand-in:\n{s}"
        );
        assert!(
            squeeze(line(&s, "GPU 0 ")).contains(&format!("temp {t}C ")),
            "{s}"
        );
        if w == 160 {
            let spark = line(&s, "util, last minute");
            assert!(spark.contains('#') || spark.contains('='), "{spark}");
        }
    }
    let plain = Theme::shipped_default().for_terminal(ColorMode::None);
    for (w, h) in [(160, 48), (60, 20)] {
        let mut a = app(fx.snapshot(8, 30), plain.clone());
        let buf = draw(&mut a, w, h);
        for cell in buf.content() {
            assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset), "{w}x{h}");
        }
        // The warning stands out without colour: bold.
        let s = text(&buf);
        let y = s.lines().position(|l| l.contains("! checkpoints")).unwrap() as u16;
        let x = s
            .lines()
            .nth(y as usize)
            .unwrap()
            .chars()
            .position(|c| c == '!')
            .unwrap() as u16;
        let after = (x..buf.area.width)
            .find(|&x| buf[(x, y)].symbol() == "r")
            .unwrap();
        assert!(buf[(after, y)].modifier.contains(Modifier::BOLD), "{s}");
        assert!(s.contains("util ") && s.contains("CPU busy 23%"), "{s}");
    }
}

#[test]
fn without_gpus_one_line_says_why_and_the_host_is_still_shown() {
    let reasons = [
        NoGpus::LibraryNotFound(
            "libnvidia-ml.so.1: cannot open shared object file: No such file or directory".into(),
        ),
        NoGpus::NoDriver("the kernel driver is not loaded".into()),
        NoGpus::NoGpu,
    ];
    for why in reasons {
        let mut snap = Snapshot::default();
        snap.push(Sample {
            gpus: Err(why.clone()),
            host: host(),
        });
        let mut a = app(snap, Theme::shipped_default());
        for (w, h) in [(160, 48), (60, 20)] {
            let s = text(&draw(&mut a, w, h));
            let said = format!("no GPU figures: {why}");
            assert!(words(&s).contains(&said), "{w}x{h} {said}:\n{s}");
            assert!(!s.contains("GPU 0") && s.contains("CPU busy 23%"), "{s}");
        }
    }
    let mut waiting = app(Snapshot::default(), Theme::shipped_default());
    let s = text(&draw(&mut waiting, 60, 20));
    assert!(s.contains("waiting for the first sample"), "{s}");
}
