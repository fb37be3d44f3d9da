//! A running `stacklab` child as the lab reads it: reader threads turn its output into typed
//! [`ChildEvent`]s (progress lines parsed, other lines kept as text, bytes that are not
//! UTF-8 decoded lossily so the pipe is always drained) and wake the parent; [`Job::poll`]
//! takes them in and, once the child has exited and both pipes are closed, its outcome.
//! The parent never waits on the child.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Child;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::spawn::{self, Io, Spec};
use crate::progress::Progress;

/// Wakes the parent's loop from a reader thread (something arrived).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Lines of a job's stderr kept for its error message.
const STDERR_KEEP: usize = 40;
/// Progress wakes the parent at most this often.
const WAKE_EVERY: Duration = Duration::from_millis(150);

/// What a child's output says, line by line.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildEvent {
    /// A `{"progress":{...}}` line on stderr.
    Progress(Progress),
    /// Any other stderr line (warnings, the error).
    Stderr(String),
    /// A stdout line (the report is the last one).
    Stdout(String),
    /// A stream ended (`true`: stdout).
    Closed { stdout: bool },
}

/// One line as read (with or without its line break) as the event it is.
pub fn decode_line(bytes: &[u8], stdout: bool) -> ChildEvent {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim_end_matches(['\n', '\r']).to_string();
    if stdout {
        return ChildEvent::Stdout(line);
    }
    match crate::progress::parse(&line) {
        Some(p) => ChildEvent::Progress(p),
        None => ChildEvent::Stderr(line),
    }
}

fn reader<R: Read + Send + 'static>(r: R, tx: Sender<ChildEvent>, wake: Wake, stdout: bool) {
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
            let event = decode_line(&bytes, stdout);
            let is_progress = matches!(event, ChildEvent::Progress(_));
            if tx.send(event).is_err() {
                // The job is gone; keep draining so the child never blocks.
                continue;
            }
            if is_progress && last_wake.elapsed() >= WAKE_EVERY {
                last_wake = Instant::now();
                wake();
            }
        }
        let _ = tx.send(ChildEvent::Closed { stdout });
        wake();
    });
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

/// What the events said so far.
#[derive(Debug, Default)]
struct Seen {
    progress: Option<Progress>,
    stderr: VecDeque<String>,
    stdout: String,
    stdout_closed: bool,
    stderr_closed: bool,
}

impl Seen {
    fn take(&mut self, e: ChildEvent) {
        match e {
            ChildEvent::Progress(p) => self.progress = Some(p),
            ChildEvent::Stderr(l) => {
                if self.stderr.len() == STDERR_KEEP {
                    self.stderr.pop_front();
                }
                self.stderr.push_back(l);
            }
            ChildEvent::Stdout(l) => {
                self.stdout.push_str(&l);
                self.stdout.push('\n');
            }
            ChildEvent::Closed { stdout: true } => self.stdout_closed = true,
            ChildEvent::Closed { stdout: false } => self.stderr_closed = true,
        }
    }
}

pub struct Job {
    /// What it is doing, for the screen (`stack m1 | m2`).
    pub what: String,
    /// The command line, for the log and the help.
    pub command: String,
    child: Option<Child>,
    events: Receiver<ChildEvent>,
    seen: Seen,
    pub started: Instant,
    pub outcome: Option<Outcome>,
}

impl Job {
    /// Starts `exe args...` with progress lines on, output read as events, in its own
    /// process group.
    pub fn start(exe: &Path, args: &[String], what: &str, wake: Wake) -> Result<Job> {
        let env = [(crate::progress::ENV.to_string(), "json".to_string())];
        let mut child = spawn::start(
            &Spec {
                program: exe,
                args,
                env: &env,
            },
            &Io::Piped,
        )?;
        let (tx, rx) = channel();
        reader(
            child.stdout.take().expect("piped"),
            tx.clone(),
            wake.clone(),
            true,
        );
        reader(child.stderr.take().expect("piped"), tx, wake, false);
        let command = format!("stacklab {}", args.join(" "));
        tracing::info!(%command, "background job started");
        Ok(Job {
            what: what.to_string(),
            command,
            child: Some(child),
            events: rx,
            seen: Seen::default(),
            started: Instant::now(),
            outcome: None,
        })
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last progress event taken in by [`Job::poll`].
    pub fn progress(&self) -> Option<Progress> {
        self.seen.progress.clone()
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

    /// The stderr lines kept (the last 40), oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.seen.stderr.iter().cloned().collect()
    }

    /// Everything the child wrote on stdout so far.
    pub fn stdout(&self) -> &str {
        &self.seen.stdout
    }

    /// Takes in the events that arrived and looks whether the child ended (its output all
    /// read); returns true when the job just finished.
    pub fn poll(&mut self) -> bool {
        while let Ok(e) = self.events.try_recv() {
            self.seen.take(e);
        }
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        let Ok(Some(status)) = child.try_wait() else {
            return false;
        };
        // Its pipes close when it exits (unless something it started holds them): give the
        // readers a moment to deliver the rest.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !(self.seen.stdout_closed && self.seen.stderr_closed) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => self.seen.take(e),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.child = None;
        self.outcome = Some(if status.success() {
            Outcome::Done(
                self.seen
                    .stdout
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_string(),
            )
        } else {
            let err: Vec<&str> = self
                .seen
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
            // SAFETY: kill has no memory effects; the group is the child's own.
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

    fn no_wake() -> Wake {
        Arc::new(|| {})
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
    fn lines_decode_to_events() {
        let p = b"{\"progress\":{\"stage\":\"eval\",\"done\":3,\"total\":9}}\r\n";
        assert_eq!(
            decode_line(p, false),
            ChildEvent::Progress(Progress {
                stage: "eval".into(),
                done: 3,
                total: 9
            })
        );
        // The same bytes on stdout are the report's text, not progress.
        assert!(matches!(decode_line(p, true), ChildEvent::Stdout(_)));
        assert_eq!(
            decode_line(b"warning: bad \xff byte\n", false),
            ChildEvent::Stderr("warning: bad \u{FFFD} byte".into())
        );
        assert_eq!(
            decode_line(b"{\"progress\": 3}", false),
            ChildEvent::Stderr("{\"progress\": 3}".into())
        );
    }

    #[test]
    fn progress_events_arrive_in_order_and_wake_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(
            dir.path(),
            "for i in 1 2 3; do echo \"{\\\"progress\\\":{\\\"stage\\\":\\\"eval\\\",\\\"done\\\":$i,\\\"total\\\":3}}\" >&2; done\n\
             echo 'warning: x' >&2\n\
             echo '{\"ok\":1}'",
        );
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = woken.clone();
        let wake: Wake = Arc::new(move || {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let mut job = Job::start(&exe, &[], "test", wake).unwrap();
        finish(&mut job);
        assert_eq!(job.progress().map(|p| (p.done, p.total)), Some((3, 3)));
        assert_eq!(job.stderr_tail(), vec!["warning: x".to_string()]);
        assert_eq!(job.outcome, Some(Outcome::Done("{\"ok\":1}".into())));
        // At least the first progress line and each stream's end woke it.
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst) >= 3);
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
        let mut job = Job::start(&exe, &[], "test", no_wake()).unwrap();
        finish(&mut job);
        assert_eq!(job.outcome, Some(Outcome::Done("{\"ok\":true}".into())));
        assert_eq!(
            job.stderr_tail().last().map(String::as_str),
            Some("last words")
        );
        assert!(
            job.stdout().starts_with("out \u{FFFD}\n"),
            "{:?}",
            job.stdout()
        );
    }

    #[test]
    fn a_failure_in_bytes_that_are_not_utf8_is_still_told() {
        let dir = tempfile::tempdir().unwrap();
        let exe = script(
            dir.path(),
            "printf 'error: cannot read \\377.bin\\n' >&2\nexit 1",
        );
        let mut job = Job::start(&exe, &[], "test", no_wake()).unwrap();
        finish(&mut job);
        assert_eq!(
            job.outcome,
            Some(Outcome::Failed("error: cannot read \u{FFFD}.bin".into()))
        );
    }
}
