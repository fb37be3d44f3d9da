//! One writer per run. A training holds an exclusive `flock` on `<run>/run.lock` for its
//! whole life (from before its first file is written until its final status), and writes
//! who it is into the file (pid, process start time, what for, device). `train --resume`,
//! `rm` and `gc` take the same lock, so none of them touches a run another process trains;
//! the lab, `stacklab runs` and the queue read the file and test the lock without taking it
//! for long, and show a run whose lock a training holds as running whatever its
//! `status.json` says.
//!
//! The kernel drops the lock when its holder dies (even by `kill -9`), so a stale file never
//! blocks a run: the pid in it only names who held it last.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const LOCK_FILE: &str = "run.lock";

/// What holds a run's lock: a training, `rm` or `gc`.
pub const TRAIN: &str = "train";
pub const RM: &str = "rm";
pub const GC: &str = "gc";

/// A short contention (another process testing the lock, or a holder that is writing its
/// name) is waited out this many times, a few milliseconds apart, before a refusal.
const TRIES: u32 = 25;
const PAUSE: Duration = Duration::from_millis(20);

/// Who holds (or last held) a run's lock, as written in its lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/stat` field 22, so a reused pid is not taken for the holder.
    #[serde(default)]
    pub start_time: Option<u64>,
    /// `train`, `rm` or `gc`.
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Holder {
    pub fn is_training(&self) -> bool {
        self.purpose == TRAIN
    }

    pub fn alive(&self) -> bool {
        super::process::is_alive_as(self.pid, self.start_time)
    }

    /// "being trained by pid 123", "being removed by pid 45 (stacklab rm)".
    pub fn describe(&self) -> String {
        match self.purpose.as_str() {
            TRAIN => format!("being trained by pid {}", self.pid),
            RM => format!("being removed by pid {} (stacklab rm)", self.pid),
            GC => format!("being cleaned by pid {} (stacklab gc)", self.pid),
            other => format!("locked by pid {} ({other})", self.pid),
        }
    }
}

/// A refusal: the run's lock is held by another process.
#[derive(Debug, Clone)]
pub struct Held {
    pub run: PathBuf,
    pub holder: Option<Holder>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self
            .run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.run.display().to_string());
        match &self.holder {
            Some(h) => write!(
                f,
                "run `{name}` is {} ({} is held)",
                h.describe(),
                self.run.join(LOCK_FILE).display()
            ),
            None => write!(
                f,
                "run `{name}` is locked by another process ({} is held)",
                self.run.join(LOCK_FILE).display()
            ),
        }
    }
}

impl std::error::Error for Held {}

/// A held run lock; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    /// Closing it releases the lock.
    _file: File,
    pub path: PathBuf,
    /// This lock created the lock file (the folder had none).
    created: bool,
}

impl RunLock {
    /// Releases the lock leaving the folder as it was: a lock file this lock created is
    /// removed first (a refused resume leaves nothing behind). A process waiting for the
    /// lock meanwhile sees its file gone and takes the one at the path.
    pub fn discard(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// The process holding it (this one).
    pub fn holder(&self) -> Option<Holder> {
        read_holder_at(&self.path)
    }
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock takes a file descriptor this `File` owns and has no memory effects.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn is_contended(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EWOULDBLOCK) || e.raw_os_error() == Some(libc::EAGAIN)
}

/// The lock file is still the one at its path (not unlinked by a removal meanwhile).
fn still_in_place(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Takes the run folder's lock for `purpose` (creating the lock file when missing) and
/// writes this process into it. Refuses with [`Held`] (downcast the error) while another
/// process holds it; an error naming the folder when the folder does not exist.
pub fn acquire(run: &Path, purpose: &str, device: Option<&str>) -> Result<RunLock> {
    let path = run.join(LOCK_FILE);
    for _ in 0..TRIES {
        let open = |create_new: bool| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(create_new)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
        };
        let (file, created) = match open(true) {
            Ok(f) => (Ok(f), true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => (open(false), false),
            Err(e) => (Err(e), false),
        };
        let file =
            file.with_context(|| format!("cannot open the run's lock file {}", path.display()))?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) if still_in_place(&file, &path) => {
                let (pid, start_time) = super::process::training_process();
                let me = Holder {
                    pid,
                    start_time,
                    purpose: purpose.to_string(),
                    device: device.map(String::from),
                };
                write_holder(&file, &me)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                return Ok(RunLock {
                    _file: file,
                    path,
                    created,
                });
            }
            // The file was removed (the run folder with it) after we opened it: try again,
            // on what is at the path now.
            Ok(()) => {}
            Err(e) if is_contended(&e) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        std::thread::sleep(PAUSE);
    }
    Err(Held {
        run: run.to_path_buf(),
        holder: read_holder_at(&path),
    }
    .into())
}

fn write_holder(file: &File, h: &Holder) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let text = serde_json::to_string(h).map_err(std::io::Error::other)?;
    file.set_len(0)?;
    file.write_all_at(format!("{text}\n").as_bytes(), 0)
}

fn read_holder_at(path: &Path) -> Option<Holder> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let mut text = String::new();
    f.by_ref().take(4096).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// What the run's lock file says about its last holder (without testing the lock).
pub fn read_holder(run: &Path) -> Option<Holder> {
    read_holder_at(&run.join(LOCK_FILE))
}

/// Whether the run's lock is held by some process now (without reading who).
pub fn is_locked(run: &Path) -> bool {
    is_held(&run.join(LOCK_FILE))
}

/// Whether the lock file at `path` is held by some process now. Tested with a shared lock
/// taken and dropped at once, so testers never block each other.
fn is_held(path: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    match flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
        Ok(()) => false,
        Err(e) => is_contended(&e),
    }
}

/// The live process holding the run's lock, if one does (its file is read, its process
/// checked by pid and start time, and only then the lock itself tested).
pub fn holder(run: &Path) -> Option<Holder> {
    let path = run.join(LOCK_FILE);
    let h = read_holder_at(&path)?;
    (h.alive() && is_held(&path)).then_some(h)
}

/// The live training holding the run's lock, if one does.
pub fn training(run: &Path) -> Option<Holder> {
    holder(run).filter(Holder::is_training)
}

/// A training's lock still held after the process it names has ended: rank 0 of a
/// `train --nproc` whose launcher was killed, in the moments before it is gone too (its
/// GPU memory with it).
pub fn outlived(run: &Path) -> Option<Holder> {
    let path = run.join(LOCK_FILE);
    let h = read_holder_at(&path)?;
    (h.is_training() && !h.alive() && is_held(&path)).then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_named_by_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        assert!(acquire(&run, TRAIN, None).is_err(), "no folder, no lock");
        std::fs::create_dir(&run).unwrap();
        assert!(holder(&run).is_none());
        let lock = acquire(&run, TRAIN, Some("cpu")).unwrap();
        let h = holder(&run).expect("held");
        assert_eq!(h.pid, std::process::id());
        assert_eq!(
            (h.purpose.as_str(), h.device.as_deref()),
            (TRAIN, Some("cpu"))
        );
        assert_eq!(training(&run), Some(h.clone()));
        assert_eq!(lock.holder(), Some(h));
        // Another open file of the same process conflicts as another process would.
        let e = acquire(&run, RM, None).unwrap_err();
        let held = e.downcast_ref::<Held>().expect("a Held refusal");
        assert_eq!(held.holder.as_ref().unwrap().pid, std::process::id());
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("is being trained by pid {}", std::process::id()))
                && msg.contains("run.lock"),
            "{msg}"
        );
        drop(lock);
        // Released on drop. A child another test spawns at this moment may still share the
        // lock's file description until its exec closes it (O_CLOEXEC): allow that instant.
        let released = (0..100).any(|_| {
            let free = holder(&run).is_none();
            if !free {
                std::thread::sleep(Duration::from_millis(20));
            }
            free
        });
        assert!(released, "released on drop");
        let gc = acquire(&run, GC, None).unwrap();
        assert!(training(&run).is_none(), "held, but not by a training");
        assert!(holder(&run).is_some());
        drop(gc);
        // A lock that created the file and is discarded leaves the folder as it was.
        std::fs::remove_file(run.join(LOCK_FILE)).unwrap();
        acquire(&run, TRAIN, None).unwrap().discard();
        assert!(!run.join(LOCK_FILE).exists());
        std::fs::write(run.join(LOCK_FILE), "").unwrap();
        acquire(&run, TRAIN, None).unwrap().discard();
        assert!(run.join(LOCK_FILE).exists(), "one it found stays");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_holder_blocks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = Holder {
            pid: dead,
            start_time: None,
            purpose: TRAIN.into(),
            device: None,
        };
        std::fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_string(&stale).unwrap(),
        )
        .unwrap();
        assert_eq!(read_holder(dir.path()), Some(stale));
        assert!(holder(dir.path()).is_none());
        let lock = acquire(dir.path(), TRAIN, None).unwrap();
        assert_eq!(
            read_holder(dir.path()).unwrap().pid,
            std::process::id(),
            "the new holder's name replaces the old"
        );
        drop(lock);
    }

    #[test]
    fn a_lock_on_a_removed_folder_is_not_taken_for_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        std::fs::create_dir(&run).unwrap();
        let first = acquire(&run, TRAIN, None).unwrap();
        // The folder goes away (a failed setup removes what it created) and comes back.
        std::fs::remove_dir_all(&run).unwrap();
        std::fs::create_dir(&run).unwrap();
        let second = acquire(&run, TRAIN, None).unwrap();
        assert!(holder(&run).is_some());
        drop(first);
        assert!(holder(&run).is_some(), "the lock at the path is the second");
        drop(second);
    }
}
