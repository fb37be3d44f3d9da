//! Fetching one shard: continued from its `.part` file with an HTTP range request while the
//! server's ETag or Last-Modified still names the same file (`If-Range`), never written
//! past the size its header promises (with or without Content-Length), retried with
//! backoff (honouring `Retry-After`), and checked (header magic, version, token count
//! against the size) before it is renamed into place.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::attempt::attempt_once;
use super::job::not_a_shard;
pub use super::job::{Job, Progress};
use super::part::PartOrigin;
use crate::data::shard::{check_header, read_header, HEADER_BYTES};

/// What became of a file.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Already complete on disk: its token count.
    Present(usize),
    /// Downloaded (bytes fetched by this run) and checked: its token count.
    Fetched { tokens: usize, bytes: u64 },
}

/// Sleeps `wait`, waking early when another file failed.
fn pause(wait: Duration, stop: &AtomicBool) {
    let until = std::time::Instant::now() + wait;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Fetches `job` unless it is already complete, retrying a broken transfer or a busy
/// server (429, 5xx) up to `retries` times (each continuing where the last stopped).
pub fn fetch(
    agent: &ureq::Agent,
    job: &Job,
    retries: u32,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<Outcome> {
    if job.dest.exists() {
        return read_header(&job.dest)
            .map(Outcome::Present)
            .map_err(|e| anyhow!("{e}; delete {} to download it again", job.dest.display()));
    }
    let part = job.part();
    let mut fetched = 0u64;
    let mut attempt = 0;
    loop {
        match attempt_once(agent, job, &part, stop, progress, &mut fetched) {
            Ok(()) => break,
            Err(f) if f.retry && attempt < retries && !stop.load(Ordering::Relaxed) => {
                attempt += 1;
                let backoff = Duration::from_millis(250u64 << attempt.min(5));
                let wait = f.wait.map_or(backoff, |w| w.max(backoff));
                tracing::warn!("{}: {:#}; retrying in {wait:?}", job.name, f.error);
                pause(wait, stop);
            }
            Err(f) => {
                let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                let keep = if have > 0 {
                    format!(
                        "; {have} bytes are kept in {} and the next run continues from there",
                        part.display()
                    )
                } else {
                    String::new()
                };
                return Err(f
                    .error
                    .context(format!("cannot download {}{keep}", job.name)));
            }
        }
    }
    let size = std::fs::metadata(&part)?.len();
    let mut header = [0u8; HEADER_BYTES];
    let checked = File::open(&part)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(anyhow::Error::from)
        .and_then(|_| check_header(Path::new(&job.name), &header, size));
    let tokens = match checked {
        Ok(n) => n,
        Err(e) => {
            PartOrigin::discard(&part);
            return Err(not_a_shard(e, job));
        }
    };
    File::open(&part).and_then(|f| f.sync_all())?;
    std::fs::rename(&part, &job.dest).map_err(|e| {
        anyhow!(
            "cannot rename {} to {}: {e}",
            part.display(),
            job.dest.display()
        )
    })?;
    let _ = std::fs::remove_file(PartOrigin::file(&part));
    Ok(Outcome::Fetched {
        tokens,
        bytes: fetched,
    })
}
