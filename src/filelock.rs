//! Advisory file locks (`flock`) for files several stacklab processes write: a results CSV
//! that two stacks append to, and a sweep's output folder that one sweep owns at a time.
//! The kernel drops a lock when its holder dies (even by `kill -9`), so a stale lock file
//! never blocks anyone; the pid written into it only names who holds it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    pub path: PathBuf,
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock takes a descriptor this `File` owns and touches no memory.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

/// The lock file that guards `file`: `.NAME.lock` beside it (a file rewritten by rename
/// changes its inode, so the lock cannot be on the file itself).
pub fn beside(file: &Path) -> PathBuf {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!(".{name}.lock"))
}

/// Waits for the exclusive lock on `path` (created when missing): for short critical
/// sections such as appending one row.
pub fn exclusive(path: &Path) -> Result<FileLock> {
    let file = open(path)?;
    flock(&file, libc::LOCK_EX).with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(FileLock {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// Takes the exclusive lock on `path` if no other process holds it, writing this process's
/// pid into the file; `Err` with the holder's pid when one does.
pub fn try_exclusive(path: &Path, what: &str) -> Result<FileLock> {
    let mut file = open(path)?;
    if let Err(e) = flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim();
            anyhow::bail!(
                "{what} is in use by another stacklab process{} ({} is locked): wait for it to end, or stop it",
                if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
                path.display()
            );
        }
        return Err(e).with_context(|| format!("cannot lock {}", path.display()));
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(FileLock {
        _file: file,
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let held = try_exclusive(&p, "the sweep folder").unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts.
        let e = try_exclusive(&p, "the sweep folder")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "the sweep folder is in use by another stacklab process (pid {})",
                std::process::id()
            )),
            "{e}"
        );
        drop(held);
        let again = try_exclusive(&p, "the sweep folder").unwrap();
        drop(again);
        drop(exclusive(&p).unwrap());
    }
}
