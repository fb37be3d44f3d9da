//! Background work of the lab: a `stacklab` subcommand (`stack ... --json`, `inspect ...
//! --json`) run as a child process, so a libtorch crash cannot take the lab down and
//! cancelling is a kill. Reader threads collect its JSON output and its progress lines
//! (`STACKLAB_PROGRESS=json`) and wake the main loop; the UI never waits on it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc::UnboundedSender;

use super::action::Event;

/// Wakes the main loop from another thread (a background result arrived). Tests use
/// [`Waker::none`] and poll.
#[derive(Clone, Default)]
pub struct Waker(Option<UnboundedSender<Event>>);

impl Waker {
    pub fn new(tx: UnboundedSender<Event>) -> Waker {
        Waker(Some(tx))
    }
    pub fn none() -> Waker {
        Waker(None)
    }
    pub fn wake(&self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Event::Wake);
        }
    }
}

/// Lines of a job's stderr kept for its error message.
const STDERR_KEEP: usize = 40;
/// Progress wakes the UI at most this often.
const WAKE_EVERY: Duration = Duration::from_millis(150);

#[derive(Debug, Default)]
struct Shared {
    progress: Option<crate::progress::Progress>,
    stderr: VecDeque<String>,
    stdout: String,
    stdout_closed: bool,
    stderr_closed: bool,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Exit status 0: its stdout's last line (the JSON report).
    Done(String),
    /// Failed: the error it printed (its last stderr lines), or how it died.
    Failed(String),
    Cancelled,
}

pub struct Job {
    /// What it is doing, for the screen (`stack m1 | m2`).
    pub what: String,
    /// The command line, for the log and the help.
    pub command: String,
    child: Option<Child>,
    shared: Arc<Mutex<Shared>>,
    pub started: Instant,
    pub outcome: Option<Outcome>,
}

fn reader<R: Read + Send + 'static>(
    r: R,
    shared: Arc<Mutex<Shared>>,
    waker: Waker,
    is_stdout: bool,
) {
    std::thread::spawn(move || {
        let mut last_wake = Instant::now() - WAKE_EVERY;
        let mut input = BufReader::new(r);
        let mut bytes = Vec::new();
        // Bytes, not `lines()`: a line that is not UTF-8 (a library's message, a file name)
        // is decoded lossily and the pipe drained on, or the child would block on it.
        loop {
            bytes.clear();
            match input.read_until(b'\n', &mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            let text = String::from_utf8_lossy(&bytes);
            let line = text.trim_end_matches(['\n', '\r']).to_string();
            let mut s = shared.lock().expect("job state");
            if is_stdout {
                s.stdout.push_str(&line);
                s.stdout.push('\n');
                continue;
            }
            match crate::progress::parse(&line) {
                Some(p) => {
                    s.progress = Some(p);
                    drop(s);
                    if last_wake.elapsed() >= WAKE_EVERY {
                        last_wake = Instant::now();
                        waker.wake();
                    }
                }
                None => {
                    if s.stderr.len() == STDERR_KEEP {
                        s.stderr.pop_front();
                    }
                    s.stderr.push_back(line);
                }
            }
        }
        let mut s = shared.lock().expect("job state");
        if is_stdout {
            s.stdout_closed = true;
        } else {
            s.stderr_closed = true;
        }
        drop(s);
        waker.wake();
    });
}

impl Job {
    /// Starts `exe args...` with progress lines on, output captured, in its own process group.
    pub fn start(exe: &Path, args: &[String], what: &str, waker: &Waker) -> Result<Job> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env(crate::progress::ENV, "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        reader(
            child.stdout.take().expect("piped"),
            shared.clone(),
            waker.clone(),
            true,
        );
        reader(
            child.stderr.take().expect("piped"),
            shared.clone(),
            waker.clone(),
            false,
        );
        let command = format!("stacklab {}", args.join(" "));
        tracing::info!(%command, "background job started");
        Ok(Job {
            what: what.to_string(),
            command,
            child: Some(child),
            shared,
            started: Instant::now(),
            outcome: None,
        })
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn progress(&self) -> Option<crate::progress::Progress> {
        self.shared.lock().expect("job state").progress.clone()
    }

    /// Seconds left at the rate so far, once there is a rate.
    pub fn eta_s(&self) -> Option<f64> {
        let p = self.progress()?;
        let secs = self.started.elapsed().as_secs_f64();
        (p.done > 0 && p.total >= p.done && secs > 0.0)
            .then(|| secs * (p.total - p.done) as f64 / p.done as f64)
    }

    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    /// Looks whether the child ended (and its output is read); returns true when the job
    /// just finished.
    pub fn poll(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        let Ok(Some(status)) = child.try_wait() else {
            return false;
        };
        // Its pipes are closed when it exits; give the readers a moment to finish.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let s = self.shared.lock().expect("job state");
            if (s.stdout_closed && s.stderr_closed) || Instant::now() > deadline {
                break;
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = None;
        let s = self.shared.lock().expect("job state");
        self.outcome = Some(if status.success() {
            Outcome::Done(
                s.stdout
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_string(),
            )
        } else {
            let err: Vec<&str> = s
                .stderr
                .iter()
                .map(String::as_str)
                .filter(|l| !l.trim().is_empty())
                .collect();
            let tail = err[err.len().saturating_sub(4)..].join(" / ");
            Outcome::Failed(if tail.is_empty() {
                format!("ended with {status}")
            } else {
                tail
            })
        });
        tracing::info!(command = %self.command, outcome = ?self.outcome, "background job ended");
        true
    }

    /// Kills the child (and anything it started) and waits for it.
    pub fn cancel(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory effects; the group is the child's own (process_group(0)).
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!(command = %self.command, "background job cancelled");
        }
        if self.outcome.is_none() {
            self.outcome = Some(Outcome::Cancelled);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let exe = dir.join("child.sh");
        std::fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    /// Polls until the job ends; a child that never ends (blocked on a full pipe) fails the
    /// test after a minute instead of hanging it.
    fn finish(job: &mut Job) {
        let t0 = Instant::now();
        while !job.poll() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the child never ended: its output is not drained"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_does_not_stop_the_draining() {
        let dir = tempfile::tempdir().unwrap();
        // A line that is not UTF-8, then far more than a pipe holds, then the result.
        let exe = script(
            dir.path(),
            "printf 'bad \\377\\376 bytes\\n' >&2\n\
             printf 'out \\377\\n'\n\
             i=0\n\
             while [ $i -lt 4000 ]; do echo \"chatter line $i that fills the pipe\" >&2; i=$((i+1)); done\n\
             echo 'last words' >&2\n\
             echo '{\"ok\":true}'",
        );
        let mut job = Job::start(&exe, &[], "test", &Waker::none()).unwrap();
        finish(&mut job);
        assert_eq!(job.outcome, Some(Outcome::Done("{\"ok\":true}".into())));
        let s = job.shared.lock().unwrap();
        assert_eq!(s.stderr.back().map(String::as_str), Some("last words"));
        assert!(s.stdout.starts_with("out \u{FFFD}\n"), "{:?}", s.stdout);
    }

    #[test]
    fn a_failure_in_bytes_that_are_not_utf8_is_still_told() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(
            dir.path(),
            "printf 'error: cannot read \\377.bin\\n' >&2\nexit 1",
        );
        let mut job = Job::start(&exe, &[], "test", &Waker::none()).unwrap();
        finish(&mut job);
        assert_eq!(
            job.outcome,
            Some(Outcome::Failed("error: cannot read \u{FFFD}.bin".into()))
        );
    }
}
