//! The real binary in a real terminal (tmux): open the lab, start a tiny training from the
//! form, see its val loss, quit, find the training still running, reopen and see it
//! re-attached; SIGHUP the lab and find the training alive and the terminal restored;
//! reopen and watch the training finish.
//!
//! The training is held with SIGSTOP while the lab is closed and reopened, so the test
//! never races it; every wait ends on what the screen or the run folder shows.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{micro_config, Lab};
use stacklab::runs::process;
use stacklab::runs::run_dir::{RunDir, RunState};

struct Tmux {
    socket: String,
    training: Option<u32>,
}

impl Tmux {
    /// The lab's session, `w` x `h`, running `command`.
    fn new_session(&self, w: u16, h: u16, command: &str) {
        let (w, h) = (w.to_string(), h.to_string());
        self.cmd(&[
            "new-session",
            "-d",
            "-s",
            "lab",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (.ci/run installs it; apt-get install tmux)");
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

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "lab"];
        args.extend(keys);
        self.cmd(&args);
    }

    fn line(&self, text: &str) {
        self.cmd(&["send-keys", "-t", "lab", "-l", text]);
        self.keys(&["Enter"]);
    }

    /// Clears the screen and waits until it is clear, so a later wait never reads the
    /// previous lab's exit line (under load the shell may run `clear` only after the next
    /// screen capture).
    fn clear(&self) {
        self.line("clear");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let s = self.screen();
            if !exited(&s) && !s.contains("clear") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the screen to clear:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn format(&self, f: &str) -> String {
        self.cmd(&["display-message", "-p", "-t", "lab", f])
            .trim()
            .to_string()
    }

    /// Waits until the screen satisfies `ok`; fails if the training failed or the lab
    /// ended when it should not have.
    fn wait(
        &self,
        what: &str,
        run: Option<&Path>,
        lab_running: bool,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}:\n{s}"
            );
            if lab_running && exited(&s) {
                panic!("the lab ended while waiting for {what}:\n{s}");
            }
            if let Some(run) = run {
                if let Ok(st) = RunDir::new(run).read_status() {
                    assert!(
                        st.state != RunState::Failed,
                        "the training failed: {}\n{s}",
                        st.message
                    );
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The lab's pid: the `stacklab` child of the pane's shell.
    fn lab_pid(&self) -> u32 {
        let shell: i32 = self.format("#{pane_pid}").parse().unwrap();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            let ppid: i32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
            if ppid == shell && stat.contains("(stacklab)") {
                return pid;
            }
        }
        panic!("no lab process under the pane's shell {shell}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.training {
            // SAFETY: signals to the training this test started (it leads its own group).
            unsafe {
                libc::kill(-(pid as i32), libc::SIGCONT);
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// The shell printed the lab's exit status (not the command line that asks for it).
fn exited(s: &str) -> bool {
    s.lines().any(|l| l.starts_with("LAB-EXIT="))
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory effects; the pid is the training this test started.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "signal {sig} to {pid}"
    );
}

#[test]
fn the_lab_starts_a_training_that_survives_quit_and_sighup() {
    let lab = Lab::new();
    let configs = lab.path("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(configs.join("micro.toml"), micro_config(60, "")).unwrap();
    // The data dir is shared with the other tests: prepare the embedded corpus first.
    lab.ok(&["data", "embedded"]);
    let (mut t, open) = open_lab(&lab, &configs, 120, 36);
    t.wait("the lab", None, true, |s| {
        s.contains("no runs: n starts one")
    });

    // Start a run from the form with the config's values.
    t.keys(&["n"]);
    t.wait("the form", None, true, |s| {
        s.contains("new run") && s.contains("< micro >")
    });
    t.keys(&["Enter"]);
    let run: PathBuf = loop {
        let found = std::fs::read_dir(lab.checkpoints())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("status.json").is_file());
        if let Some(p) = found {
            break p;
        }
        let s = t.screen();
        assert!(!s.contains("did not start") && !exited(&s), "{s}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let name = run.file_name().unwrap().to_string_lossy().into_owned();
    let status = RunDir::new(&run).read_status().unwrap();
    let (pid, start) = (status.pid, status.start_time);
    t.training = Some(pid);
    assert_eq!(
        process::proc_info(pid).unwrap().pgrp,
        pid as i32,
        "a detached session"
    );
    // Hold the training as soon as it has validated once, and see the lab show that loss.
    let val = loop {
        let rows = RunDir::new(&run).read_metrics().unwrap();
        if let Some(v) = rows.iter().find_map(|r| r.val_loss) {
            signal(pid, libc::SIGSTOP);
            break v;
        }
        let st = RunDir::new(&run).read_status().unwrap();
        assert!(st.state == RunState::Running, "{}", st.message);
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let val = format!("{val:.4}");
    let short = &name[..10];
    let s = t.wait("the val loss", Some(&run), true, |s| {
        s.lines()
            .any(|l| l.contains(short) && l.contains("running") && l.contains(&val))
    });
    keep_screen("runs", &s);

    // q quits the lab; the training keeps running; the terminal is back to normal.
    t.keys(&["q"]);
    t.wait("the lab to quit", None, false, |s| {
        s.lines().any(|l| l == "LAB-EXIT=0")
    });
    assert_eq!(
        t.format("#{alternate_on}"),
        "0",
        "the alternate screen was left"
    );
    assert_eq!(t.format("#{cursor_flag}"), "1", "the cursor is shown");
    assert!(
        process::is_alive_as(pid, start),
        "the training outlived the lab"
    );

    // Reopened, the lab finds the training and shows it running (pid and start time match).
    t.clear();
    t.line(&open);
    t.wait("the re-attached run", Some(&run), true, |s| {
        s.lines()
            .any(|l| l.contains(short) && l.contains("running"))
    });

    // SIGHUP (a closed terminal): the lab ends and restores the terminal; the training lives.
    let lab_pid = t.lab_pid();
    signal(lab_pid, libc::SIGHUP);
    t.wait("the lab to end on SIGHUP", None, false, exited);
    assert_eq!(t.format("#{alternate_on}"), "0");
    assert_eq!(t.format("#{cursor_flag}"), "1");
    t.line("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo -e -icanon -e -echo | tr '\\n' ' '; echo STTY-DONE");
    let s = t.wait("stty", None, false, |s| {
        s.lines()
            .any(|l| l.ends_with("STTY-DONE") && !l.contains("stty"))
    });
    assert!(
        s.lines().any(|l| l.trim() == "icanon echo STTY-DONE"),
        "cooked mode (icanon, echo) after SIGHUP:\n{s}"
    );
    assert!(
        process::is_alive_as(pid, start),
        "the training outlived SIGHUP to the lab"
    );

    // Reopen, let the training go on, and watch it finish.
    t.clear();
    t.line(&open);
    t.wait("the run again", Some(&run), true, |s| s.contains(short));
    signal(pid, libc::SIGCONT);
    let s = t.wait("the run to finish", Some(&run), true, |s| {
        s.lines()
            .any(|l| l.contains(short) && l.contains("done") && l.contains("60/60"))
    });
    assert!(s.contains("done: 60 steps"), "the run's message:\n{s}");
    t.training = None;
    t.keys(&["q"]);
    t.wait("the lab to quit", None, false, |s| {
        s.lines().any(|l| l == "LAB-EXIT=0")
    });
    let st = RunDir::new(&run).read_status().unwrap();
    assert_eq!(st.state, RunState::Done);
    // The training ends its process after writing `done`.
    while process::is_alive_as(pid, start) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Opens the lab in a fresh tmux server on `lab`'s folders; returns the handle and the
/// command that (re)opens it.
fn open_lab(lab: &Lab, configs: &Path, w: u16, h: u16) -> (Tmux, String) {
    let env = lab.write(
        "env.sh",
        &format!(
            "export STACKLAB_DATA_DIR='{}' STACKLAB_CHECKPOINT_DIR='{}' STACKLAB_CONFIG_DIR='{}' PS1='$ '\ncd '{}'\n",
            common::shared_data_dir().display(),
            lab.checkpoints().display(),
            configs.display(),
            lab.dir.path().display()
        ),
    );
    let open = format!("'{}' --device cpu; echo LAB-EXIT=$?", common::bin());
    let t = Tmux {
        socket: format!("stacklab-test-{}-{w}", std::process::id()),
        training: None,
    };
    t.new_session(w, h, "bash --norc --noprofile");
    t.line(&format!(". '{}'; clear", env.display()));
    t.line(&open);
    (t, open)
}

/// Keeps a screen for people to read (`cargo test -- --nocapture` prints it too).
fn keep_screen(name: &str, s: &str) {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-{name}.txt"));
    std::fs::write(&p, s).unwrap();
    eprintln!("--- {name} ({})\n{s}", p.display());
}

#[test]
fn the_lab_marks_two_checkpoints_evaluates_their_stack_and_inspects_the_seam() {
    let lab = Lab::new();
    let configs = lab.path("configs");
    std::fs::create_dir_all(&configs).unwrap();
    common::train_pair(&lab);
    // The lab's results file is in the data dir, shared by the tests: count what is there.
    let results = common::shared_data_dir().join("lab").join("stacks.csv");
    let (rows, _) = stacklab::tui::panes::builder::results::load(&results).unwrap();
    let (one, two) = (
        format!("Results · {}", rows.len() + 1),
        format!("Results · {}", rows.len() + 2),
    );
    let (t, _) = open_lab(&lab, &configs, 130, 42);
    t.wait("the lab", None, true, |s| s.contains("2 Checkpoints"));
    t.keys(&["2"]);
    // m2 sits under m1: rows m1, m1/step_000005, m2, m2/step_000005.
    t.wait("the lineage tree", None, true, |s| {
        s.contains("Checkpoints · 2") && s.contains("▼ m2")
    });
    t.keys(&["Down"]);
    t.keys(&["Space"]);
    t.keys(&["Down"]);
    t.keys(&["Down"]);
    t.keys(&["Space"]);
    let s = t.wait("two marks", None, true, |s| s.contains("2 marked"));
    keep_screen("checkpoints", &s);
    assert!(
        s.contains("1. m1/step_000005") && s.contains("2. m2/step_000005"),
        "{s}"
    );
    t.keys(&["b"]);
    t.wait("the builder", None, true, |s| {
        s.contains("blocks m1:0 ║ m2:1") && s.contains("use_last_layer off")
    });
    t.keys(&["e"]);
    t.wait("the first result", None, true, |s| {
        s.contains(&one) && s.lines().any(|l| l.contains("m1:0..1 | m2:1..2"))
    });
    // use_last_layer on: m1 keeps its last block; evaluate again.
    t.keys(&["l"]);
    t.wait("the toggle", None, true, |s| {
        s.contains("use_last_layer on") && s.contains("blocks m1:0 m1:1 ║ m2:1")
    });
    t.keys(&["e"]);
    let s = t.wait("the second result", None, true, |s| {
        s.contains(&two) && s.lines().any(|l| l.contains("m1:0..2 | m2:1..2"))
    });
    keep_screen("stack-builder", &s);
    t.keys(&["i"]);
    let s = t.wait("the inspection", None, true, |s| {
        s.contains("seam m1 -> m2 ═") && s.contains("m2 alone [1, 2)")
    });
    keep_screen("inspect", &s);
    let lines: Vec<&str> = s.lines().collect();
    let seam = lines
        .iter()
        .position(|l| l.contains("seam m1 -> m2 ═"))
        .unwrap();
    assert!(
        lines[seam - 1].contains("m1:1") && lines[seam + 1].contains("m2:1"),
        "{s}"
    );
    t.keys(&["q"]);
    t.wait("the lab to quit", None, false, |s| {
        s.lines().any(|l| l == "LAB-EXIT=0")
    });
}

/// The shell's view of the terminal after the lab ended: cooked mode, main screen, cursor.
fn assert_restored(t: &Tmux, how: &str) {
    assert_eq!(t.format("#{alternate_on}"), "0", "main screen after {how}");
    assert_eq!(t.format("#{cursor_flag}"), "1", "cursor shown after {how}");
    t.line("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo -e -icanon -e -echo | tr '\\n' ' '; echo STTY-DONE");
    let s = t.wait("stty", None, false, |s| {
        s.lines()
            .any(|l| l.ends_with("STTY-DONE") && !l.contains("stty"))
    });
    assert!(
        s.lines().any(|l| l.trim() == "icanon echo STTY-DONE"),
        "cooked mode (icanon, echo) after {how}:\n{s}"
    );
}

#[test]
fn sigterm_sigint_a_panic_and_a_vanished_terminal_all_end_the_lab_cleanly() {
    let lab = Lab::new();
    let configs = lab.path("configs");
    std::fs::create_dir_all(&configs).unwrap();
    lab.ok(&["data", "embedded"]);
    let (t, open) = open_lab(&lab, &configs, 100, 30);
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        t.wait("the lab", None, true, |s| s.contains("1 Runs"));
        signal(t.lab_pid(), sig);
        t.wait(name, None, false, exited);
        assert_restored(&t, name);
        t.clear();
        t.line(&open);
    }
    // A panic inside the terminal: restored, the message shown, exit status 101.
    t.wait("the lab", None, true, |s| s.contains("1 Runs"));
    t.keys(&["q"]);
    t.wait("the lab to quit", None, false, exited);
    t.clear();
    t.line(&format!(
        "{}=1 '{}' --device cpu; echo LAB-EXIT=$?",
        stacklab::tui::FAULT_PANIC_ENV,
        common::bin()
    ));
    let s = t.wait("the panic", None, false, exited);
    assert!(
        s.lines().any(|l| l == "LAB-EXIT=101") && s.contains("STACKLAB_FAULT_PANIC_IN_LAB is set"),
        "{s}"
    );
    assert_restored(&t, "a panic");

    // The terminal vanishes without a SIGHUP reaching the lab (SIGHUP blocked): it notices
    // its input hung up and exits instead of spinning.
    t.clear();
    t.line(&format!(
        "python3 -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP]); os.execv(sys.argv[1], sys.argv[1:])' '{}' --device cpu",
        common::bin()
    ));
    t.wait("the lab", None, true, |s| s.contains("1 Runs"));
    let pid = t.lab_pid();
    let start = process::proc_info(pid).unwrap().start_time;
    t.cmd(&["kill-server"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while process::is_alive_as(pid, Some(start)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the lab kept running after its terminal went away"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn line_with<'a>(s: &'a str, has: &str) -> &'a str {
    s.lines()
        .find(|l| l.contains(has))
        .unwrap_or_else(|| panic!("no line with {has:?}:\n{s}"))
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
        training: None,
    };
    let command = format!(
        "exec env STACKLAB_DATA_DIR='{}' STACKLAB_CHECKPOINT_DIR='{}' STACKLAB_CONFIG_DIR='{}' STACKLAB_FAKE_GPUS=8 '{}' --device cpu",
        common::shared_data_dir().display(),
        lab.checkpoints().display(),
        common::repo().join("configs").display(),
        common::bin()
    );
    t.new_session(160, 48, &command);
    t.wait("the lab", None, true, |s| s.contains("1 Runs"));
    // The pane's process is the lab itself (`exec`, done by now that it draws): its CPU
    // time is the lab's.
    let pid: u32 = t.format("#{pane_pid}").parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "stacklab");
    t.keys(&["5"]);
    let before = t.wait("the System pane", None, true, |s| {
        s.contains("GPU 7 Fake GPU 80GB")
    });
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
    let gpu0 = |s: &str| line_with(s, "GPU 0 Fake GPU 80GB").to_string();
    assert_ne!(gpu0(&before), gpu0(&after), "{after}");
    assert!(percent < 1.0, "the idle lab used {percent:.2} % of a CPU");
}
