//! Training processes as the lab sees them: named by pid *and* start time so a reused pid is
//! never taken for a training, and stopped by signalling their process group (they are
//! started detached, their own session, by `jobs::spawn::start_detached`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    /// Field 3: R, S, D, Z (zombie), T (stopped), X (dead), ...
    pub state: char,
    /// Field 4: the parent's pid.
    pub ppid: u32,
    /// Field 5.
    pub pgrp: i32,
    /// Field 22: clock ticks after boot.
    pub start_time: u64,
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcInfo> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3.
    Some(ProcInfo {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

pub fn proc_info(pid: u32) -> Option<ProcInfo> {
    if pid == 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent of `pid` (none for a process that is gone).
pub fn parent_pid(pid: u32) -> Option<u32> {
    proc_info(pid).map(|p| p.ppid)
}

/// This process's start time, for the status it writes.
pub fn own_start_time() -> Option<u64> {
    static START: OnceLock<Option<u64>> = OnceLock::new();
    *START.get_or_init(|| proc_info(std::process::id()).map(|p| p.start_time))
}

/// The process a training names as itself in its run's status and lock: the launcher that
/// started it (`train --nproc`, through [`crate::jobs::ranks::LAUNCHER_PID_ENV`]), so stop
/// and kill reach every process through it; else this process.
pub fn training_process() -> (u32, Option<u64>) {
    let launcher = std::env::var(crate::jobs::ranks::LAUNCHER_PID_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|pid| *pid != 0);
    match launcher {
        Some(pid) => (pid, proc_info(pid).map(|p| p.start_time)),
        None => (std::process::id(), own_start_time()),
    }
}

/// Whether `pid` is a live (not zombie) process that, when `start_time` is given, started
/// then. Without `/proc` only the pid's existence can be checked.
pub fn is_alive_as(pid: u32, start_time: Option<u64>) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    if Path::new("/proc/self/stat").exists() {
        return match proc_info(pid) {
            None => false,
            Some(p) if matches!(p.state, 'Z' | 'X' | 'x') => false,
            Some(p) => start_time.is_none_or(|t| t == p.start_time),
        };
    }
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Sends `signal` to the training `pid` (checked against `start_time` first): to its whole
/// process group when it leads one (trainings the lab started), else to the pid alone (a
/// training started from a shell shares its group with the shell).
pub fn signal_training(pid: u32, start_time: Option<u64>, signal: i32) -> Result<()> {
    anyhow::ensure!(
        is_alive_as(pid, start_time),
        "process {pid} is not running (or is no longer the training)"
    );
    let target = match proc_info(pid) {
        Some(p) if p.pgrp == pid as i32 => -(pid as i32),
        _ => pid as i32,
    };
    // SAFETY: kill has no memory effects; the target was checked above.
    if unsafe { libc::kill(target, signal) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot signal process {pid}"));
    }
    Ok(())
}

/// A process of a training other than the one its status names: rank k > 0 of a run in
/// several processes, recorded in the run's folder as `.rank<k>.json` (pid and start time)
/// so its GPU process is named with its run (torchrun's ranks are not under rank 0).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RankProcess {
    pid: u32,
    start_time: Option<u64>,
}

/// Records this process as rank `rank` of the training in `run`.
pub fn record_rank(run: &Path, rank: usize) -> Result<()> {
    let me = std::process::id();
    let rec = RankProcess {
        pid: me,
        start_time: proc_info(me).map(|p| p.start_time),
    };
    crate::paths::write_atomic_unsynced(
        &run.join(format!(".rank{rank}.json")),
        serde_json::to_string(&rec)?.as_bytes(),
    )
}

/// The live processes recorded by [`record_rank`] in `run` (a record of a process that has
/// ended, or whose pid another process now has, is not one).
pub fn rank_pids(run: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(run) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".rank") && n.ends_with(".json")
        })
        .filter_map(|e| {
            let r: RankProcess = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            is_alive_as(r.pid, r.start_time).then_some(r.pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 1 0 0 20 0 1 0 987654 1000 50";
        let p = parse_stat(text).unwrap();
        assert_eq!(p.state, 'S');
        assert_eq!(p.ppid, 1);
        assert_eq!(p.pgrp, 4242);
        assert_eq!(p.start_time, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn a_reused_pid_is_not_the_training() {
        let me = std::process::id();
        let t = own_start_time().expect("/proc on Linux");
        assert!(is_alive_as(me, Some(t)));
        assert!(is_alive_as(me, None));
        // The same pid with another start time: a different process that got the pid.
        assert!(!is_alive_as(me, Some(t + 1)));
        assert!(!is_alive_as(0, None));
        assert!(!is_alive_as(u32::MAX, None));
    }

    #[test]
    fn detached_children_lead_their_own_session_and_stop_by_group() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("logs/out.log");
        use crate::jobs::spawn::{start_detached, Io, Spec};
        let args = ["-c".to_string(), "echo hello; exec sleep 1000".to_string()];
        let mut child = start_detached(
            &Spec {
                program: Path::new("/bin/sh"),
                args: &args,
                env: &[],
            },
            &Io::Logged { log: out.clone() },
        )
        .unwrap();
        let pid = child.id();
        // The shell has run its first command once the file holds its line.
        while std::fs::read_to_string(&out).unwrap_or_default().is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let info = proc_info(pid).unwrap();
        assert_eq!(info.pgrp, pid as i32, "its own process group");
        // SAFETY: getsid has no memory effects.
        assert_eq!(
            unsafe { libc::getsid(pid as i32) },
            pid as i32,
            "its own session"
        );
        assert!(signal_training(pid, Some(info.start_time + 1), libc::SIGTERM).is_err());
        signal_training(pid, Some(info.start_time), libc::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!is_alive_as(pid, Some(info.start_time)));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
    }

    #[test]
    fn ranks_are_recorded_and_only_live_ones_count() {
        let dir = tempfile::tempdir().unwrap();
        record_rank(dir.path(), 1).unwrap();
        assert_eq!(rank_pids(dir.path()), [std::process::id()]);
        // A record of a process that has ended.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        std::fs::write(
            dir.path().join(".rank2.json"),
            format!("{{\"pid\":{gone},\"start_time\":1}}"),
        )
        .unwrap();
        std::fs::write(dir.path().join(".rank3.json"), "not json").unwrap();
        assert_eq!(rank_pids(dir.path()), [std::process::id()]);
        assert!(rank_pids(&dir.path().join("none")).is_empty());
    }
}
