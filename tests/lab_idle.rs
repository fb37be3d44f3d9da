//! The real lab in a real terminal (tmux) with eight fake GPUs (`STACKLAB_FAKE_GPUS=8`),
//! idling on the System pane: the CPU time it takes while its figures move on screen.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

fn line<'a>(s: &'a str, has: &str) -> &'a str {
    s.lines()
        .find(|l| l.contains(has))
        .unwrap_or_else(|| panic!("no line with {has:?}:\n{s}"))
}

/// A tmux server of its own, with the lab in its one pane; killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "lab"])
    }

    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// CPU seconds (user and system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // Fields 14 and 15 (utime, stime), counted from field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The real lab with eight fake GPUs, idling on the System pane at 160x48 (a redraw every
/// second, sampling on its thread): its CPU time over ten seconds stays under 1 % of a core.
#[test]
fn the_lab_idles_under_one_percent_cpu_with_eight_fake_gpus() {
    let lab = common::Lab::new();
    let t = Tmux {
        socket: format!("stacklab-system-{}", std::process::id()),
    };
    let command = format!(
        "exec env STACKLAB_DATA_DIR='{}' STACKLAB_CHECKPOINT_DIR='{}' STACKLAB_CONFIG_DIR='{}' STACKLAB_FAKE_GPUS=8 '{}' --device cpu",
        common::shared_data_dir().display(),
        lab.checkpoints().display(),
        common::repo().join("configs").display(),
        common::bin()
    );
    t.cmd(&[
        "new-session",
        "-d",
        "-s",
        "lab",
        "-x",
        "160",
        "-y",
        "48",
        &command,
    ]);
    let pid: u32 = t
        .cmd(&["display-message", "-p", "-t", "lab", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    t.wait_for("1 Runs");
    t.cmd(&["send-keys", "-t", "lab", "5"]);
    let before = t.wait_for("GPU 7 Fake GPU 80GB");
    assert!(before.contains("5 System"), "{before}");
    // Settled: the first samples drawn, the start-up work done.
    std::thread::sleep(Duration::from_secs(3));
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (c1, wall) = (cpu_seconds(pid), t0.elapsed().as_secs_f64());
    let after = t.screen();
    let percent = (c1 - c0) / wall * 100.0;
    eprintln!(
        "lab idle on the System pane with 8 fake GPUs: {:.3} CPU s in {wall:.1} s = {percent:.2} %",
        c1 - c0
    );
    // It kept sampling and drawing meanwhile: the fake figures moved on screen.
    let gpu0 = |s: &str| line(s, "GPU 0 Fake GPU 80GB").to_string();
    assert_ne!(gpu0(&before), gpu0(&after), "{after}");
    assert!(percent < 1.0, "the idle lab used {percent:.2} % of a CPU");
}
