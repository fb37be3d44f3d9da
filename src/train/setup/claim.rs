//! A new run's folder: created exclusively (`create_dir`, which fails when it exists) and
//! locked (`runs::lock`) before anything is loaded or written, so of two `train --name X`
//! started together one trains and the other refuses, naming the first one's pid.
//!
//! A setup that fails after that removes the folder again, so a refused config leaves
//! nothing behind. A start killed during its setup (nothing written but the lock file and
//! the log, no live holder) leaves a folder that the next `train --name` of that name takes
//! over.

use std::path::Path;

use anyhow::{Context, Result};

use crate::runs::lock::{self, Held, RunLock, LOCK_FILE};
use crate::runs::run_dir::LOG_FILE;

/// Whether the folder holds nothing a run or a user put there: at most the lock file, the
/// log and temporary files of a start that died before writing its config.
fn abandoned_start(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    entries.flatten().all(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let plain_file = e.file_type().is_ok_and(|t| t.is_file());
        plain_file
            && (name == LOCK_FILE
                || name == LOG_FILE
                || (name.starts_with('.') && name.ends_with(".tmp")))
    })
}

fn exists(name: &str, path: &Path) -> anyhow::Error {
    match lock::training(path) {
        Some(h) => anyhow::anyhow!(
            "run `{name}` is {} ({}): choose another --name",
            h.describe(),
            path.display()
        ),
        None => anyhow::anyhow!(
            "run `{name}` already exists at {}: choose another --name, or continue it with --resume {}",
            path.display(),
            path.display()
        ),
    }
}

fn vanished(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::NotFound)
}

/// Creates and locks the folder of the new run `name` at `path`.
pub(super) fn claim(path: &Path, name: &str, device: &str) -> Result<RunLock> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the checkpoint dir {}", parent.display()))?;
    }
    let mut last = None;
    for _ in 0..3 {
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !abandoned_start(path) {
                    return Err(exists(name, path));
                }
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create run folder {}", path.display()))
            }
        }
        match lock::acquire(path, lock::TRAIN, Some(device)) {
            // Another start may have finished its setup between our look and our lock.
            Ok(l) if abandoned_start(path) => return Ok(l),
            Ok(_) => return Err(exists(name, path)),
            Err(e) if e.downcast_ref::<Held>().is_some() => {
                anyhow::bail!("{e}: choose another --name");
            }
            // Removed by a start whose setup failed, after we saw it: try again.
            Err(e) if vanished(&e) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("tried"))
        .with_context(|| format!("cannot create run folder {}", path.display()))
}

/// Removes what a failed setup created: the whole folder (it held nothing else, see
/// [`abandoned_start`]), while its lock is still held, so no other start takes it meanwhile.
pub(super) fn release_failed(path: &Path, lock: RunLock) {
    if abandoned_start(path) {
        let _ = std::fs::remove_dir_all(path);
    }
    drop(lock);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_claimed_once_and_a_dead_start_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpts/x");
        let first = claim(&path, "x", "cpu").unwrap();
        let e = claim(&path, "x", "cpu").unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&format!("being trained by pid {}", std::process::id()))
                && msg.contains("choose another --name"),
            "{msg}"
        );
        // The start dies (its lock goes with it): its folder blocks nothing.
        drop(first);
        std::fs::write(path.join(LOG_FILE), "new run `x`\n").unwrap();
        let again = claim(&path, "x", "cpu").unwrap();
        release_failed(&path, again);
        assert!(!path.exists(), "a failed setup removes its folder");
        // A real run (or anything else) of that name is never taken over.
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("config.toml"), "seed = 1\n").unwrap();
        let e = claim(&path, "x", "cpu").unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let other = dir.path().join("ckpts/notes");
        std::fs::create_dir_all(other.join("sub")).unwrap();
        assert!(claim(&other, "notes", "cpu").is_err());
        assert!(other.join("sub").is_dir());
    }
}
