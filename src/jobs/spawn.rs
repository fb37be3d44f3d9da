//! Starting `stacklab` children: the only `Command::new` of the project. Three ways, as the
//! callers need them (and the processes of `train --nproc`, [`rank_command`]): piped (the lab reads progress and the report as they come), detached
//! (a queued training outlives the lab: its own session, output appended to a file), and
//! waited for with output to a log (a sweep's trainings and stacks).
//!
//! The lab's children get their own process group, so cancelling one signals what it
//! started too and a key the lab reads never reaches them; a sweep's children stay in the
//! sweep's group, so a Ctrl-C in the terminal reaches them too (a training checkpoints
//! and ends, and the sweep resumes it next time).

use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use anyhow::{Context, Result};

/// The `stacklab` executable the children run: this program.
pub fn stacklab_exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the stacklab executable")
}

/// How a child's output is taken.
pub enum Io {
    /// stdout and stderr piped to the parent.
    Piped,
    /// stdout piped (the report), stderr appended to a log file.
    StdoutPiped { log: PathBuf },
    /// Both appended to a log file.
    Logged { log: PathBuf },
}

/// A child to start: the program, its arguments and extra environment.
pub struct Spec<'a> {
    pub program: &'a Path,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
}

fn open_log(log: &Path) -> Result<File> {
    if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))
}

/// `program args`, stdin closed: the one place a child's command is made.
fn base<A: AsRef<std::ffi::OsStr>>(program: &Path, args: &[A]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// A process of `train --nproc` (this program with `args`): stderr the launcher's, stdout
/// too for rank 0 only (it prints the run's folder); the caller adds the rank's variables.
pub fn rank_command(args: &[std::ffi::OsString], rank: usize) -> Result<Command> {
    let mut cmd = base(&stacklab_exe()?, args);
    if rank != 0 {
        cmd.stdout(Stdio::null());
    }
    Ok(cmd)
}

fn command(spec: &Spec, io: &Io) -> Result<Command> {
    let mut cmd = base(spec.program, spec.args);
    for (k, v) in spec.env {
        cmd.env(k, v);
    }
    match io {
        Io::Piped => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Io::StdoutPiped { log } => {
            cmd.stdout(Stdio::piped()).stderr(open_log(log)?);
        }
        Io::Logged { log } => {
            let out = open_log(log)?;
            let err = out
                .try_clone()
                .with_context(|| format!("cannot open {}", log.display()))?;
            cmd.stdout(out).stderr(err);
        }
    }
    Ok(cmd)
}

/// Starts a child in its own process group.
pub fn start(spec: &Spec, io: &Io) -> Result<Child> {
    command(spec, io)?
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", spec.program.display()))
}

/// Starts a child in the parent's process group (signals from the terminal reach both).
fn start_in_group(spec: &Spec, io: &Io) -> Result<Child> {
    command(spec, io)?
        .spawn()
        .with_context(|| format!("cannot start {}", spec.program.display()))
}

/// Starts a child detached from the parent: a new session (no controlling terminal, so a
/// closed terminal or a dropped SSH link sends it no SIGHUP), so it leads its own process
/// group. The caller keeps the `Child` only to reap it.
pub fn start_detached(spec: &Spec, io: &Io) -> Result<Child> {
    let mut cmd = command(spec, io)?;
    // SAFETY: setsid is async-signal-safe, the only call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", spec.program.display()))
}

/// Runs a child to its end, in the parent's process group, with both streams appended to
/// `log`.
pub fn run_logged(spec: &Spec, log: &Path) -> Result<ExitStatus> {
    let mut child = start_in_group(
        spec,
        &Io::Logged {
            log: log.to_path_buf(),
        },
    )?;
    child
        .wait()
        .with_context(|| format!("cannot wait for {}", spec.program.display()))
}

/// Runs a child to its end, in the parent's process group: its stdout returned, its
/// stderr appended to `log`.
pub fn run_for_output(spec: &Spec, log: &Path) -> Result<Output> {
    let child = start_in_group(
        spec,
        &Io::StdoutPiped {
            log: log.to_path_buf(),
        },
    )?;
    child
        .wait_with_output()
        .with_context(|| format!("cannot wait for {}", spec.program.display()))
}

/// Whether a child's end was an interruption (Ctrl-C's 130, or a signal), not a failure.
pub fn interrupted(status: &ExitStatus) -> bool {
    status.code() == Some(130) || status.code().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["-c".into(), script.into()]
    }

    #[test]
    fn a_logged_child_appends_both_streams_and_gets_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/run.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "before\n").unwrap();
        let args = sh("echo out $STACKLAB_TEST_VALUE; echo err >&2; exit 3");
        let env = [("STACKLAB_TEST_VALUE".to_string(), "42".to_string())];
        let spec = Spec {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &env,
        };
        let status = run_logged(&spec, &log).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(!interrupted(&status));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "before\nout 42\nerr\n"
        );
    }

    #[test]
    fn output_is_returned_and_stderr_logged_and_a_signal_is_an_interruption() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stacks.log");
        let args = sh("echo report; echo chatter >&2");
        let spec = Spec {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &[],
        };
        let out = run_for_output(&spec, &log).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "report\n");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "chatter\n");
        let args = sh("kill -TERM $$");
        let spec = Spec {
            program: Path::new("/bin/sh"),
            args: &args,
            env: &[],
        };
        assert!(interrupted(&run_logged(&spec, &log).unwrap()));
    }

    #[test]
    fn a_missing_program_is_named() {
        let spec = Spec {
            program: Path::new("/nonexistent/stacklab"),
            args: &[],
            env: &[],
        };
        let e = start(&spec, &Io::Piped).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/stacklab"), "{e:#}");
    }
}
