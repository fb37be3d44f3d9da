//! `train --nproc N`: this process starts N copies of the same command line (without
//! `--nproc`), with the variables torchrun would set (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`,
//! `MASTER_ADDR=127.0.0.1`, `MASTER_PORT` a free port) and rank 0 hosting the rendezvous
//! store (standalone), then waits for them.
//!
//! SIGINT and SIGTERM are passed on to every process (they stop together at a step's end,
//! with a checkpoint); each process dies with this one (`PR_SET_PDEATHSIG`), so a kill of
//! this process reaches them all. When one process fails, the others get the collective
//! timeout to notice and end on their own; whatever is left after that is killed.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::spawn;
use crate::dist::env::STANDALONE_ENV;

/// The variable naming the launcher's pid to the processes it starts: their run's status
/// and lock name it, so stop and kill reach the launcher and through it every process.
pub const LAUNCHER_PID_ENV: &str = "STACKLAB_LAUNCHER_PID";

/// A TCP port free on the loopback now (the kernel's pick).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free TCP port")?;
    Ok(l.local_addr()?.port())
}

/// `args` without `--nproc N` / `--nproc=N`.
pub fn without_nproc(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        let s = a.to_string_lossy();
        if s == "--nproc" {
            skip = true;
        } else if !s.starts_with("--nproc=") {
            out.push(a.clone());
        }
    }
    out
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The CPU threads each of `nproc` local processes gets when the environment does not say
/// (`OMP_NUM_THREADS` unset): the cores shared between them, as torchrun does.
pub fn threads_per_process(nproc: usize) -> Option<usize> {
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / nproc.max(1)).max(1))
}

fn start(args: &[OsString], rank: usize, nproc: usize, port: u16) -> Result<Child> {
    let mut cmd = spawn::rank_command(args, rank)?;
    cmd.env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", nproc.to_string())
        .env("LOCAL_WORLD_SIZE", nproc.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env(STANDALONE_ENV, "1")
        .env(LAUNCHER_PID_ENV, std::process::id().to_string())
        .env_remove("TORCHELASTIC_USE_AGENT_STORE")
        .env_remove("TORCHELASTIC_RUN_ID");
    if let Some(threads) = threads_per_process(nproc) {
        cmd.env("OMP_NUM_THREADS", threads.to_string());
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start process {rank} of {nproc}"))
}

fn signal_all(children: &mut [(Child, Option<i32>)], sig: i32) {
    for (c, code) in children.iter_mut() {
        if code.is_none() {
            // SAFETY: kill has no memory effects; the child is ours and not yet reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }
}

/// Runs `args` (this program's arguments, `--nproc` removed) in `nproc` processes and
/// returns the exit code to end with: rank 0's when it failed, else the first failure's,
/// else 0. `timeout` is the processes' collective timeout.
pub fn run_local(nproc: usize, args: &[OsString], timeout: Duration) -> Result<i32> {
    if nproc == 0 {
        bail!("--nproc 0: at least one process");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let port = free_port()?;
    let mut children: Vec<(Child, Option<i32>)> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        match start(args, rank, nproc, port) {
            Ok(c) => children.push((c, None)),
            Err(e) => {
                signal_all(&mut children, libc::SIGKILL);
                return Err(e);
            }
        }
    }
    let mut forwarded = false;
    let mut deadline: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) && !forwarded {
            signal_all(&mut children, libc::SIGTERM);
            forwarded = true;
        }
        for (c, code) in children.iter_mut() {
            if code.is_none() {
                if let Some(s) = c.try_wait()? {
                    *code = Some(exit_code(s));
                }
            }
        }
        if children.iter().all(|(_, c)| c.is_some()) {
            break;
        }
        let failed = children.iter().any(|(_, c)| c.is_some_and(|c| c != 0));
        if failed && deadline.is_none() {
            deadline = Some(Instant::now() + timeout + Duration::from_secs(30));
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            signal_all(&mut children, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let codes: Vec<i32> = children.iter().map(|(_, c)| c.unwrap_or(1)).collect();
    Ok(match codes[0] {
        0 => codes.iter().copied().find(|c| *c != 0).unwrap_or(0),
        c => c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nproc_is_taken_out_of_the_arguments() {
        let args: Vec<OsString> = [
            "train",
            "--nproc",
            "2",
            "--config",
            "x",
            "--nproc=3",
            "--name",
            "n",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out: Vec<String> = without_nproc(&args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(out, ["train", "--config", "x", "--name", "n"]);
    }
}
