//! Taking requests off the queue without losing one. A request is claimed by renaming its
//! file to `NAME.taken-PID-START` (the claimer's pid and start time): of two takers only
//! one rename succeeds. The claimed file is removed once the training has started; a
//! claimer that died before (a crash, `kill -9`) leaves it, and the next look at the queue
//! puts it back, unless its training is seen alive (its start record or its run lock).
//!
//! Decisions are made under the queue's lock, an exclusive `flock` on `.queue/.lock`, held
//! for the few milliseconds a decision takes.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Queue, QueuedRun};
use crate::runs::process;

const LOCK_FILE: &str = ".lock";
const TAKEN: &str = ".taken";

/// The queue's lock, held while it lives.
pub struct QueueLock {
    _file: File,
}

/// A request claimed for starting; [`Claim::done`] once its training started.
#[derive(Debug)]
pub struct Claim {
    file: PathBuf,
}

impl Claim {
    /// The training started (or could not be started and was reported): the request is
    /// gone from the queue.
    pub fn done(self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// The claimer named in a claimed file's name, if it is one: (pid, start time).
fn claimer(file: &Path) -> Option<(u32, Option<u64>)> {
    let name = file.file_name()?.to_string_lossy().into_owned();
    if name.ends_with(".json") {
        return None;
    }
    let (_, rest) = name.rsplit_once(TAKEN)?;
    let Some(rest) = rest.strip_prefix('-') else {
        // `NAME.taken`, from before claims named their claimer.
        return Some((0, None));
    };
    let (pid, start) = rest.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok().filter(|&s| s > 0)))
}

impl Queue {
    /// Takes the queue's lock, waiting for another holder to finish its decision.
    pub fn lock(&self) -> Result<QueueLock> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        loop {
            // SAFETY: flock on a descriptor this `File` owns; no memory effects.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(QueueLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }

    /// Claims a waiting request; `None` when another taker claimed (or a cancel removed) it.
    pub fn claim(&self, q: &QueuedRun) -> Option<Claim> {
        let start = process::own_start_time().unwrap_or(0);
        let file = q
            .file
            .with_extension(format!("taken-{}-{start}", std::process::id()));
        std::fs::rename(&q.file, &file).ok()?;
        Some(Claim { file })
    }

    fn claimed_files(&self) -> Vec<(PathBuf, QueuedRun)> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| claimer(p).is_some())
            .filter_map(|p| {
                let mut q: QueuedRun =
                    serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
                q.file = p.clone();
                Some((p, q))
            })
            .collect()
    }

    /// Requests claimed and being started.
    pub fn claimed(&self) -> Vec<QueuedRun> {
        self.claimed_files().into_iter().map(|(_, q)| q).collect()
    }

    /// Puts back the requests whose claimer died before their training started (call it
    /// under the queue's lock); returns their names.
    pub fn recover(&self) -> Vec<String> {
        let root = self.root().to_path_buf();
        let mut back = Vec::new();
        for (file, q) in self.claimed_files() {
            let Some((pid, start)) = claimer(&file) else {
                continue;
            };
            if process::is_alive_as(pid, start) {
                continue;
            }
            let started = crate::runs::launch::starting(&root)
                .iter()
                .any(|s| s.name == q.name)
                || crate::runs::lock::training(&root.join(&q.name)).is_some();
            if started {
                let _ = std::fs::remove_file(&file);
                continue;
            }
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let Some((stem, _)) = name.rsplit_once(TAKEN) else {
                continue;
            };
            if std::fs::rename(&file, self.dir.join(format!("{stem}.json"))).is_ok() {
                back.push(q.name.clone());
            }
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::super::Request;
    use super::*;

    #[test]
    fn a_claim_whose_claimer_died_goes_back_to_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::new(dir.path());
        for n in ["a", "b"] {
            queue
                .push(&QueuedRun::new(n, "cpu", Request::Resume))
                .unwrap();
        }
        let waiting = queue.list();
        // Claimed by a process that died before starting anything (as a crash would).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let claimed = waiting[0].file.with_extension(format!("taken-{dead}-1"));
        std::fs::rename(&waiting[0].file, &claimed).unwrap();
        // And one claimed the old way, by a lab that crashed.
        std::fs::rename(&waiting[1].file, waiting[1].file.with_extension("taken")).unwrap();
        assert!(queue.list().is_empty());
        assert_eq!(queue.claimed().len(), 2);
        assert!(queue.contains("a"), "not lost, and not queueable twice");
        // Our own live claim stays claimed.
        queue
            .push(&QueuedRun::new("c", "cpu", Request::Resume))
            .unwrap();
        let c = queue.list().pop().unwrap();
        let mine = queue.claim(&c).unwrap();
        let mut back = queue.recover();
        back.sort();
        assert_eq!(back, ["a", "b"]);
        assert_eq!(
            queue
                .list()
                .iter()
                .map(|q| q.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"],
            "back in their places"
        );
        assert_eq!(queue.claimed().len(), 1);
        mine.done();
        assert!(queue.claimed().is_empty() && queue.recover().is_empty());
    }
}
