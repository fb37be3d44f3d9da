//! One attempt at a shard's bytes: decide where the `.part` file resumes, ask the server
//! for the rest (`Range` with `If-Range`), read what its answer means, then copy the body
//! into the part, never past the size the shard's header promises.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::anyhow;

use super::http::{content_range, describe, fatal, retry_after, transient, Failure};
use super::job::{not_a_shard, promised_size, read_part_header, Job, Progress};
use super::part::PartOrigin;
use crate::data::shard::HEADER_BYTES;

type Attempt<T> = std::result::Result<T, Failure>;

fn io_error(part: &Path, what: &str, e: std::io::Error) -> Failure {
    fatal(anyhow!("{what} {}: {e}", part.display()))
}

/// Fetches what `part` still lacks of `job`, adding the bytes it writes to `fetched`.
pub(super) fn attempt_once(
    agent: &ureq::Agent,
    job: &Job,
    part: &Path,
    stop: &AtomicBool,
    progress: &dyn Progress,
    fetched: &mut u64,
) -> Attempt<()> {
    let resume = resume_point(job, part);
    let mut req = agent.get(&job.url);
    if let (true, Some(v)) = (resume.have > 0, &resume.validator) {
        req = req
            .header("Range", format!("bytes={}-", resume.have))
            .header("If-Range", v.as_str());
    }
    let resp = req.call().map_err(|e| describe(&job.url, e))?;
    let answer = Answer::read(&resp);
    let Some((have, total)) = answer.start(job, part, &resume)? else {
        return Ok(()); // the partial file was complete already
    };
    let file = open_part(job, part, have, &answer)?;
    if let Some(t) = total {
        progress.sized(t.saturating_sub(have));
    }
    let promised = if have >= HEADER_BYTES as u64 {
        Some(promise_in_part(job, part, total)?)
    } else {
        None
    };
    let mut copy = Copy {
        job,
        part,
        file,
        have,
        started_at: have,
        total,
        promised,
        fetched,
        progress,
    };
    copy.body(resp.into_body().into_reader(), stop)?;
    copy.finish()
}

/// Where the transfer resumes: the bytes already in the part, the origin they came from,
/// and the validator that lets the server say whether its file is still that one.
struct Resume {
    have: u64,
    origin: Option<PartOrigin>,
    validator: Option<String>,
}

fn resume_point(job: &Job, part: &Path) -> Resume {
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
    Resume {
        have,
        origin,
        validator,
    }
}

/// The status and the headers of the server's answer that this reads.
struct Answer {
    status: u16,
    etag: Option<String>,
    modified: Option<String>,
    length: Option<u64>,
    range: Option<(Option<u64>, Option<u64>)>,
    retry_after: Option<String>,
}

impl Answer {
    fn read(resp: &ureq::http::Response<ureq::Body>) -> Answer {
        let header = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Answer {
            status: resp.status().as_u16(),
            etag: header("etag"),
            modified: header("last-modified"),
            length: header("content-length").and_then(|v| v.trim().parse().ok()),
            range: header("content-range").as_deref().and_then(content_range),
            retry_after: header("retry-after"),
        }
    }

    /// What the answer means: the offset the body's bytes start at in the part and the
    /// file's whole size when known, or `None` when the part was complete already.
    fn start(
        &self,
        job: &Job,
        part: &Path,
        resume: &Resume,
    ) -> Attempt<Option<(u64, Option<u64>)>> {
        let have = resume.have;
        match self.status {
            // The whole file: a fresh start, a server without ranges, or (to an If-Range
            // request) a file that changed since the part began.
            200 => Ok(Some((0, self.length))),
            206 => self
                .continued(job, part, resume)
                .map(|total| Some((have, total))),
            416 => {
                if self.range.and_then(|(_, t)| t) == Some(have) {
                    return Ok(None);
                }
                PartOrigin::discard(part);
                Err(transient(anyhow!(
                    "{}: the partial file ({have} bytes) does not fit the server's copy; starting over",
                    job.url
                )))
            }
            404 => Err(fatal(anyhow!(
                "{}: 404 Not Found (does --endpoint serve {}?)",
                job.url,
                job.name
            ))),
            s => {
                let retry = s == 429 || s >= 500;
                let wait = self
                    .retry_after
                    .as_deref()
                    .and_then(|v| retry_after(v, chrono::Utc::now()))
                    .filter(|_| retry);
                Err(Failure {
                    error: anyhow!("{}: HTTP status {s}", job.url),
                    retry,
                    wait,
                })
            }
        }
    }

    /// A partial answer continues the part only when its range starts where the part ends
    /// and its validators still name the file the part began with; its total size.
    fn continued(&self, job: &Job, part: &Path, resume: &Resume) -> Attempt<Option<u64>> {
        let have = resume.have;
        let (start, total) = self.range.ok_or_else(|| {
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
        let same = resume
            .origin
            .as_ref()
            .is_some_and(|o| o.same_file(self.etag.as_deref(), self.modified.as_deref()));
        if !same {
            PartOrigin::discard(part);
            return Err(transient(anyhow!(
                "{}: the file changed on the server since {} began; starting over",
                job.url,
                part.display()
            )));
        }
        Ok(total)
    }
}

/// The part opened to append at `have`, or created anew (with the answer's origin saved
/// beside it) when the body starts the file.
fn open_part(job: &Job, part: &Path, have: u64, answer: &Answer) -> Attempt<File> {
    if have > 0 {
        return OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(|e| io_error(part, "cannot write", e));
    }
    // Forget the old origin before truncating, and save the new one after: a crash in
    // between leaves a part without an origin, which is fetched again, never mixed.
    let _ = std::fs::remove_file(PartOrigin::file(part));
    let file = File::create(part).map_err(|e| io_error(part, "cannot write", e))?;
    PartOrigin::new(&job.url, answer.etag.as_deref(), answer.modified.as_deref())
        .save(part)
        .map_err(fatal)?;
    Ok(file)
}

/// The size promised by the header already in the part; a part whose header is not a
/// shard's is removed.
fn promise_in_part(job: &Job, part: &Path, total: Option<u64>) -> Attempt<u64> {
    let h = read_part_header(part).map_err(|e| io_error(part, "cannot read", e))?;
    promised_size(job, &h, total).map_err(|e| {
        PartOrigin::discard(part);
        fatal(not_a_shard(e, job))
    })
}

/// The body being copied into the part.
struct Copy<'a> {
    job: &'a Job,
    part: &'a Path,
    file: File,
    /// Bytes in the part so far.
    have: u64,
    started_at: u64,
    total: Option<u64>,
    /// The size the shard's header promises, once the header is in.
    promised: Option<u64>,
    fetched: &'a mut u64,
    progress: &'a dyn Progress,
}

impl Copy<'_> {
    fn write_error(&self, e: std::io::Error) -> Failure {
        io_error(self.part, "cannot write", e)
    }

    fn body(&mut self, mut body: impl Read, stop: &AtomicBool) -> Attempt<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(fatal(anyhow!("stopped after another file failed")));
            }
            // Never more than the header (until it is in), then never past what it promises.
            let room = match self.promised {
                Some(p) => p.saturating_sub(self.have),
                None => HEADER_BYTES as u64 - self.have,
            };
            if room == 0 {
                if self.body_ended(&mut body)? {
                    break;
                }
                continue;
            }
            let want = room.min(buf.len() as u64) as usize;
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(transient(anyhow!(
                        "the transfer from {} broke off after {} bytes: {e}",
                        self.job.url,
                        self.have
                    )))
                }
            };
            self.file
                .write_all(&buf[..n])
                .map_err(|e| self.write_error(e))?;
            self.have += n as u64;
            *self.fetched += n as u64;
            self.progress.advanced(n as u64);
            // Refuse a file that is not a shard (an error page, say) as soon as its header is in.
            if self.promised.is_none() && self.have >= HEADER_BYTES as u64 {
                self.learn_promise()?;
            }
        }
        Ok(())
    }

    /// With everything promised in: whether the body ended (false: a read to retry); a
    /// body that sends more is refused and the part removed.
    fn body_ended(&self, body: &mut impl Read) -> Attempt<bool> {
        let mut probe = [0u8; 1];
        match body.read(&mut probe) {
            Ok(0) => Ok(true),
            Ok(_) => {
                PartOrigin::discard(self.part);
                Err(fatal(anyhow!(
                    "{} sends more than the {} bytes the header of {} promises: not a valid shard; it was removed (run again to fetch it anew, or use another --endpoint)",
                    self.job.url,
                    self.promised.unwrap_or(0),
                    self.job.name
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
            // Everything promised is in; the final check decides.
            Err(_) => Ok(true),
        }
    }

    /// The header just came in: the size it promises (the progress bar learns it when the
    /// server did not say).
    fn learn_promise(&mut self) -> Attempt<()> {
        self.file.flush().map_err(|e| self.write_error(e))?;
        let p = promise_in_part(self.job, self.part, self.total)?;
        if self.total.is_none() {
            self.progress.sized(p.saturating_sub(self.started_at));
        }
        self.promised = Some(p);
        Ok(())
    }

    /// Whether the part holds exactly what its header promises.
    fn finish(mut self) -> Attempt<()> {
        self.file.flush().map_err(|e| self.write_error(e))?;
        let (url, have) = (&self.job.url, self.have);
        match self.promised {
            Some(p) if have == p => Ok(()),
            Some(p) => Err(transient(anyhow!(
                "the transfer from {url} ended after {have} of {p} bytes"
            ))),
            None => Err(transient(anyhow!(
                "the transfer from {url} ended after {have} bytes, before the {HEADER_BYTES}-byte header"
            ))),
        }
    }
}
