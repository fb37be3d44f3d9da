//! Fetching one shard: continued from its `.part` file with an HTTP range request, checked
//! (header magic, version, token count against the size) before it is renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Result};

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

/// Why one attempt failed, and whether trying again can help.
struct Failure {
    error: anyhow::Error,
    retry: bool,
}

fn fatal(error: anyhow::Error) -> Failure {
    Failure {
        error,
        retry: false,
    }
}
fn transient(error: anyhow::Error) -> Failure {
    Failure { error, retry: true }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("stacklab/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Fetches `job` unless it is already complete, retrying a broken transfer up to `retries`
/// times (each continuing where the last stopped).
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
                let wait = Duration::from_millis(250u64 << attempt.min(5));
                tracing::warn!("{}: {:#}; retrying in {wait:?}", job.name, f.error);
                std::thread::sleep(wait);
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
            let _ = std::fs::remove_file(&part);
            return Err(anyhow!(
                "{e}\n{} as served by {} is not a valid shard; it was removed (run again to fetch it anew, or use another --endpoint)",
                job.name,
                job.url
            ));
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
    Ok(Outcome::Fetched {
        tokens,
        bytes: fetched,
    })
}

fn describe(url: &str, e: ureq::Error) -> Failure {
    use ureq::Error as E;
    let retry = matches!(e, E::Timeout(_) | E::Io(_) | E::Protocol(_));
    let error = match &e {
        E::HostNotFound | E::ConnectionFailed | E::Io(_) | E::Timeout(_) => anyhow!(
            "cannot reach {url}: {e}\nCheck the network connection (a proxy is taken from HTTPS_PROXY / ALL_PROXY), or download from a mirror that serves the same files with --endpoint URL (or STACKLAB_DATA_ENDPOINT)"
        ),
        _ => anyhow!("{url}: {e}"),
    };
    // A refused connection or an unknown host will not change in a few seconds.
    let retry =
        retry && !matches!(&e, E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused);
    Failure { error, retry }
}

/// `bytes START-END/TOTAL` (or `bytes */TOTAL`) from a Content-Range header.
fn content_range(v: &str) -> Option<(Option<u64>, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim();
    let (range, total) = v.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = range
        .split_once('-')
        .and_then(|(s, _)| s.trim().parse().ok());
    Some((start, total))
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
    let mut req = agent.get(&job.url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| describe(&job.url, e))?;
    let status = resp.status().as_u16();
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let length: Option<u64> = header("content-length").and_then(|v| v.trim().parse().ok());
    let total = match status {
        200 => {
            // The server sends the whole file (no range support, or a fresh start).
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
                let _ = std::fs::remove_file(part);
                return Err(transient(anyhow!(
                    "{}: asked for bytes from {have}, got a range from {start:?}; starting over",
                    job.url
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
            let _ = std::fs::remove_file(part);
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
            return Err(Failure {
                error: anyhow!("{}: HTTP status {s}", job.url),
                retry,
            });
        }
    };
    if let Some(t) = total {
        progress.sized(t.saturating_sub(have));
    }
    let mut file = if have > 0 {
        OpenOptions::new().append(true).open(part)
    } else {
        File::create(part)
    }
    .map_err(|e| io("cannot write", e))?;
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut checked = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(fatal(anyhow!("stopped after another file failed")));
        }
        let n = match body.read(&mut buf) {
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
        if !checked && have >= HEADER_BYTES as u64 {
            checked = true;
            if let Some(t) = total {
                file.flush().map_err(|e| io("cannot write", e))?;
                let mut header = [0u8; HEADER_BYTES];
                File::open(part)
                    .and_then(|mut f| f.read_exact(&mut header))
                    .map_err(|e| io("cannot read", e))?;
                if let Err(e) = check_header(Path::new(&job.name), &header, t) {
                    let _ = std::fs::remove_file(part);
                    return Err(fatal(anyhow!(
                        "{e}\n{} as served by {} is not a valid shard; it was removed (run again to fetch it anew, or use another --endpoint)",
                        job.name,
                        job.url
                    )));
                }
            }
        }
    }
    file.flush().map_err(|e| io("cannot write", e))?;
    match total {
        Some(t) if have != t => Err(transient(anyhow!(
            "the transfer from {} ended after {have} of {t} bytes",
            job.url
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_range_parses() {
        assert_eq!(
            super::content_range("bytes 100-199/200"),
            Some((Some(100), Some(200)))
        );
        assert_eq!(super::content_range("bytes */200"), Some((None, Some(200))));
        assert_eq!(super::content_range("items 1-2/3"), None);
    }
}
