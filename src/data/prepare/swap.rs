//! Putting a finished dataset folder in place. An old dataset is exchanged with the new one
//! in one step (Linux `renameat2(RENAME_EXCHANGE)`), or where the filesystem cannot, moved
//! aside and moved back if the new one cannot take its place; it is deleted only once the
//! new one is in place, so a failed prepare never loses the dataset it was to replace.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::dataset::check_replaceable;
use super::DATASET_FILE;

/// Renames the finished folder `tmp` (a sibling of `out`) to `out`. A non-empty `out` is
/// replaced only with `force` and only if it still holds just a dataset (it may have
/// changed while the prepare ran); without `force`, a dataset another process finished
/// there meanwhile is kept and `tmp` dropped.
pub(super) fn into_place(tmp: &Path, out: &Path, force: bool) -> Result<()> {
    let occupied = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if !occupied {
        if let Err(e) = std::fs::rename(tmp, out) {
            // Another process may have finished the same folder first.
            if !out.join(DATASET_FILE).exists() {
                return Err(e).with_context(|| format!("cannot create {}", out.display()));
            }
        }
        return Ok(());
    }
    if !force {
        if out.join(DATASET_FILE).exists() {
            return Ok(());
        }
        bail!(
            "--out {}: files appeared in the folder while preparing; nothing was replaced",
            out.display()
        );
    }
    check_replaceable(out)?;
    match exchange(tmp, out) {
        // `tmp` now holds the old dataset.
        Ok(()) => {
            let _ = std::fs::remove_dir_all(tmp);
            Ok(())
        }
        Err(_) => move_aside_and_replace(tmp, out),
    }
}

/// The two-rename replacement, for filesystems without an atomic exchange: the old folder
/// goes back where it was if the new one cannot be renamed into place.
fn move_aside_and_replace(tmp: &Path, out: &Path) -> Result<()> {
    let old = aside_name(out);
    std::fs::rename(out, &old)
        .with_context(|| format!("cannot move the old {} aside", out.display()))?;
    if let Err(e) = std::fs::rename(tmp, out) {
        let back = std::fs::rename(&old, out);
        let kept = match back {
            Ok(()) => format!("the old dataset is still in {}", out.display()),
            Err(_) => format!("the old dataset is in {}", old.display()),
        };
        return Err(e).with_context(|| format!("cannot create {} ({kept})", out.display()));
    }
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn aside_name(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.old-{}", std::process::id()))
}

/// Swaps two paths in one step.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(dir: &Path, marker: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let info = format!(
            "tokenizer = \"tokenizer.json\"\nvocab_size = 300\ntrain_tokens = 1\nval_tokens = 1\ntrain_shards = [\"train_000000.bin\"]\nval_shards = [\"val_000000.bin\"]\nsources = [\"{marker}\"]\nval_fraction = 0.5\ncreated_at = \"-\"\nstacklab_version = \"-\"\n"
        );
        std::fs::write(dir.join(DATASET_FILE), info).unwrap();
        for f in ["tokenizer.json", "train_000000.bin", "val_000000.bin"] {
            std::fs::write(dir.join(f), marker).unwrap();
        }
    }

    #[test]
    fn an_old_dataset_is_swapped_out_and_removed_only_after() {
        let root = tempfile::tempdir().unwrap();
        let (tmp, out) = (root.path().join(".out.tmp"), root.path().join("out"));
        dataset(&out, "old");
        dataset(&tmp, "new");
        into_place(&tmp, &out, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
            "new"
        );
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the old dataset is gone once replaced");
        // The fallback path does the same.
        dataset(&tmp, "newer");
        move_aside_and_replace(&tmp, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
            "newer"
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_replacement_that_cannot_happen_keeps_the_old_dataset() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        dataset(&out, "old");
        // No new folder to put in place: the rename fails after the old one moved aside.
        let missing = root.path().join(".out.tmp");
        let e = move_aside_and_replace(&missing, &out).unwrap_err();
        assert!(
            format!("{e:#}").contains("the old dataset is still in"),
            "{e:#}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
            "old"
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        // A folder that gained another file while preparing is not replaced.
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        dataset(&missing, "new");
        let e = into_place(&missing, &out, true).unwrap_err().to_string();
        assert!(e.contains("notes.txt besides its dataset"), "{e}");
        assert_eq!(
            std::fs::read_to_string(out.join("notes.txt")).unwrap(),
            "mine"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
            "old"
        );
    }
}
