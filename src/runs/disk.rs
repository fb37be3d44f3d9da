//! Disk use of run folders and removing them safely.
//!
//! Sizes are what the files take on disk (allocated blocks, as `du` counts them). A folder is
//! removed by first renaming it to a hidden name beside it (`.NAME.rm-PID`), which is atomic:
//! readers (the lab, `stacklab runs`, a resume) see it either whole or gone, never half
//! deleted. A removal cut short leaves only the hidden folder, which `stacklab gc` clears.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The marker in the hidden name of a folder being removed.
pub const REMOVING: &str = ".rm-";

/// Bytes a file or folder takes on disk (allocated blocks), not following symbolic links.
pub fn disk_size(path: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = m.blocks() * 512;
    if !m.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_size(&e.path()))
        .sum::<u64>()
}

/// Bytes one file's metadata says it takes on disk.
pub fn allocated(m: &std::fs::Metadata) -> u64 {
    m.blocks() * 512
}

pub use crate::system::labels::format_size;

/// The hidden name a folder is renamed to while it is removed.
pub fn removal_name(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a folder path", path.display()))?;
    Ok(path.with_file_name(format!(
        ".{}{REMOVING}{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Removes a folder: renames it to a hidden name beside it, then deletes that. Returns the
/// bytes it took on disk.
pub fn remove_dir_safely(path: &Path) -> Result<u64> {
    let bytes = disk_size(path);
    let hidden = removal_name(path)?;
    std::fs::rename(path, &hidden)
        .with_context(|| format!("cannot move {} aside to remove it", path.display()))?;
    std::fs::remove_dir_all(&hidden).with_context(|| {
        format!(
            "cannot remove {} (moved from {}; `stacklab gc` retries)",
            hidden.display(),
            path.display()
        )
    })?;
    Ok(bytes)
}

/// Hidden folders in `dir` left by removals that were cut short (their process is gone).
pub fn unfinished_removals(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                return None;
            }
            let (_, pid) = name.rsplit_once(REMOVING)?;
            let pid: u32 = pid.parse().ok()?;
            (!super::process::is_alive_as(pid, None)).then(|| e.path())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_du_writes_them() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1023), "1023B");
        assert_eq!(format_size(4096), "4.0K");
        assert_eq!(format_size(12 * 1024 * 1024 + 300_000), "12M");
        assert_eq!(format_size(1536 * 1024 * 1024), "1.5G");
        assert_eq!(format_size(1024 * 1024 - 1), "1.0M");
        assert!(format_size(u64::MAX).len() <= 5);
    }

    #[test]
    fn a_folder_is_moved_aside_then_removed_and_its_size_counted() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("step_000010")).unwrap();
        std::fs::write(
            run.join("step_000010/model.safetensors"),
            vec![7u8; 100_000],
        )
        .unwrap();
        std::fs::write(run.join("status.json"), "{}").unwrap();
        let size = disk_size(&run);
        assert!(size >= 100_000 + 2, "{size}");
        assert_eq!(remove_dir_safely(&run).unwrap(), size);
        assert!(!run.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(remove_dir_safely(&run).is_err(), "gone already");

        // A removal cut short by a process that is gone leaves a hidden folder gc finds.
        let left = dir
            .path()
            .join(format!(".step_000020{REMOVING}{}", u32::MAX - 1));
        std::fs::create_dir_all(&left).unwrap();
        std::fs::create_dir_all(dir.path().join(".step_000030.tmp-1")).unwrap();
        assert_eq!(unfinished_removals(dir.path()), vec![left]);
    }
}
