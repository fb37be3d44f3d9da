//! Fetching one shard: continued from its `.part` file with an HTTP range request while the
//! server's ETag or Last-Modified still names the same file (`If-Range`), never written
//! past the size its header promises (with or without Content-Length), retried with
//! backoff (honouring `Retry-After`), and checked (header magic, version, token count
//! against the size) before it is renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::http::{content_range, describe, fatal, retry_after, transient, Failure};
use super::part::PartOrigin;
use crate::data::shard::{check_header, read_header, HEADER_BYTES};

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub url: String,
    pub dest: PathBuf,
}

impl Job {
    pub fn part(&self) -> PathBuf {
        let mut p = self.dest.clone().into_os_string();
        p.push(".part");
        PathBuf::from(p)
    }
}

/// What became of a file.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Already complete on disk: its token count.
    Present(usize),
    /// Downloaded (bytes fetched by this run) and checked: its token count.
    Fetched { tokens: usize, bytes: u64 },
}

/// Progress reporting shared by the workers.
pub trait Progress: Sync {
    /// The size of a file's remaining bytes became known.
    fn sized(&self, remaining: u64);
    fn advanced(&self, bytes: u64);
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

fn not_a_shard(e: anyhow::Error, job: &Job) -> anyhow::Error {
    anyhow!(
        "{e}\n{} as served by {} is not a valid shard; it was removed (run again to fetch it anew, or use another --endpoint)",
        job.name,
        job.url
    )
}

/// The size a shard's header promises (header + 2 bytes a token), its magic and version
/// checked; with `announced` (the server's size), that it agrees.
fn promised_size(job: &Job, header: &[u8], announced: Option<u64>) -> Result<u64> {
    let count = i32::from_le_bytes(header[8..12].try_into().expect("4 bytes")).max(0) as u64;
    let promised = HEADER_BYTES as u64 + 2 * count;
    check_header(Path::new(&job.name), header, announced.unwrap_or(promised))?;
    Ok(promised)
}

fn read_part_header(part: &Path) -> std::io::Result<[u8; HEADER_BYTES]> {
    let mut header = [0u8; HEADER_BYTES];
    File::open(part)?.read_exact(&mut header)?;
    Ok(header)
}

fn attempt_once(
    agent: &ureq::Agent,
    job: &Job,
    part: &Path,
    stop: &AtomicBool,
    progress: &dyn Progress,
    fetched: &mut u64,
) -> std::result::Result<(), Failure> {
    let io = |what: &str, e: std::io::Error| fatal(anyhow!("{what} {}: {e}", part.display()));
    let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let origin = PartOrigin::load(part).filter(|_| have > 0);
    let validator = origin
        .as_ref()
        .and_then(|o| o.if_range())
        .map(str::to_string);
    if have > 0 && validator.is_none() {
        // Nothing says whether the server's file is still the one the part began with.
        tracing::info!(
            "{}: no ETag or Last-Modified kept for {}; fetching it from the start",
            job.name,
            part.display()
        );
        have = 0;
    }
    let mut req = agent.get(&job.url);
    if let (true, Some(v)) = (have > 0, &validator) {
        req = req
            .header("Range", format!("bytes={have}-"))
            .header("If-Range", v.as_str());
    }
    let resp = req.call().map_err(|e| describe(&job.url, e))?;
    let status = resp.status().as_u16();
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (etag, modified) = (header("etag"), header("last-modified"));
    let length: Option<u64> = header("content-length").and_then(|v| v.trim().parse().ok());
    let total = match status {
        200 => {
            // The whole file: a fresh start, a server without ranges, or (to an If-Range
            // request) a file that changed since the part began.
            have = 0;
            length
        }
        206 => {
            let (start, total) = header("content-range")
                .as_deref()
                .and_then(content_range)
                .ok_or_else(|| {
                    transient(anyhow!(
                        "{}: a partial answer without a usable Content-Range",
                        job.url
                    ))
                })?;
            if start != Some(have) {
                PartOrigin::discard(part);
                return Err(transient(anyhow!(
                    "{}: asked for bytes from {have}, got a range from {start:?}; starting over",
                    job.url
                )));
            }
            if !origin
                .as_ref()
                .is_some_and(|o| o.same_file(etag.as_deref(), modified.as_deref()))
            {
                PartOrigin::discard(part);
                return Err(transient(anyhow!(
                    "{}: the file changed on the server since {} began; starting over",
                    job.url,
                    part.display()
                )));
            }
            total
        }
        416 => {
            let total = header("content-range")
                .as_deref()
                .and_then(content_range)
                .and_then(|(_, t)| t);
            if total == Some(have) {
                return Ok(()); // the partial file was complete already
            }
            PartOrigin::discard(part);
            return Err(transient(anyhow!(
                "{}: the partial file ({have} bytes) does not fit the server's copy; starting over",
                job.url
            )));
        }
        404 => {
            return Err(fatal(anyhow!(
                "{}: 404 Not Found (does --endpoint serve {}?)",
                job.url,
                job.name
            )))
        }
        s => {
            let retry = s == 429 || s >= 500;
            let wait = header("retry-after")
                .and_then(|v| retry_after(&v, chrono::Utc::now()))
                .filter(|_| retry);
            return Err(Failure {
                error: anyhow!("{}: HTTP status {s}", job.url),
                retry,
                wait,
            });
        }
    };
    let mut file = if have > 0 {
        OpenOptions::new().append(true).open(part)
    } else {
        // Forget the old origin before truncating, and save the new one after: a crash in
        // between leaves a part without an origin, which is fetched again, never mixed.
        let _ = std::fs::remove_file(PartOrigin::file(part));
        let f = File::create(part);
        if f.is_ok() {
            PartOrigin::new(&job.url, etag.as_deref(), modified.as_deref())
                .save(part)
                .map_err(fatal)?;
        }
        f
    }
    .map_err(|e| io("cannot write", e))?;
    let started_at = have;
    if let Some(t) = total {
        progress.sized(t.saturating_sub(have));
    }
    let mut promised = if have >= HEADER_BYTES as u64 {
        let h = read_part_header(part).map_err(|e| io("cannot read", e))?;
        match promised_size(job, &h, total) {
            Ok(p) => Some(p),
            Err(e) => {
                PartOrigin::discard(part);
                return Err(fatal(not_a_shard(e, job)));
            }
        }
    } else {
        None
    };
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(fatal(anyhow!("stopped after another file failed")));
        }
        // Never more than the header (until it is in), then never past what it promises.
        let room = match promised {
            Some(p) => p.saturating_sub(have),
            None => HEADER_BYTES as u64 - have,
        };
        if room == 0 {
            let mut probe = [0u8; 1];
            match body.read(&mut probe) {
                Ok(0) => break,
                Ok(_) => {
                    PartOrigin::discard(part);
                    return Err(fatal(anyhow!(
                        "{} sends more than the {} bytes the header of {} promises: not a valid shard; it was removed (run again to fetch it anew, or use another --endpoint)",
                        job.url,
                        promised.unwrap_or(0),
                        job.name
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Everything promised is in; the final check decides.
                Err(_) => break,
            }
        }
        let want = room.min(buf.len() as u64) as usize;
        let n = match body.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(transient(anyhow!(
                    "the transfer from {} broke off after {have} bytes: {e}",
                    job.url
                )))
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| io("cannot write", e))?;
        have += n as u64;
        *fetched += n as u64;
        progress.advanced(n as u64);
        // Refuse a file that is not a shard (an error page, say) as soon as its header is in.
        if promised.is_none() && have >= HEADER_BYTES as u64 {
            file.flush().map_err(|e| io("cannot write", e))?;
            let h = read_part_header(part).map_err(|e| io("cannot read", e))?;
            match promised_size(job, &h, total) {
                Ok(p) => {
                    if total.is_none() {
                        progress.sized(p.saturating_sub(started_at));
                    }
                    promised = Some(p);
                }
                Err(e) => {
                    PartOrigin::discard(part);
                    return Err(fatal(not_a_shard(e, job)));
                }
            }
        }
    }
    file.flush().map_err(|e| io("cannot write", e))?;
    match promised {
        Some(p) if have == p => Ok(()),
        Some(p) => Err(transient(anyhow!(
            "the transfer from {} ended after {have} of {p} bytes",
            job.url
        ))),
        None => Err(transient(anyhow!(
            "the transfer from {} ended after {have} bytes, before the {HEADER_BYTES}-byte header",
            job.url
        ))),
    }
}
