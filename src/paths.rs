//! Where stacklab keeps things: data (prepared corpora), configs, checkpoints.
//!
//! Each directory can be overridden by an environment variable, so tests and scripts can
//! point a run at a scratch area. Otherwise the project's own folders are used when the
//! current directory is a stacklab checkout, and the user's directories (XDG) otherwise.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub const ENV_DATA_DIR: &str = "STACKLAB_DATA_DIR";
pub const ENV_CONFIG_DIR: &str = "STACKLAB_CONFIG_DIR";
pub const ENV_CHECKPOINT_DIR: &str = "STACKLAB_CHECKPOINT_DIR";

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "stacklab")
}

fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Prepared datasets (the embedded corpus's shards, tokenizers) live here.
pub fn data_dir() -> PathBuf {
    from_env(ENV_DATA_DIR)
        .or_else(|| project_dirs().map(|d| d.data_dir().to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(".stacklab-data"))
}

/// Experiment configs: `./configs` in a checkout, else the user's config dir.
pub fn config_dir() -> PathBuf {
    if let Some(dir) = from_env(ENV_CONFIG_DIR) {
        return dir;
    }
    let local = PathBuf::from("configs");
    if local.is_dir() {
        return local;
    }
    project_dirs()
        .map(|d| d.config_dir().to_path_buf())
        .unwrap_or(local)
}

/// Runs and their checkpoints: `./checkpoints` in a checkout, else under the data dir.
pub fn checkpoint_dir() -> PathBuf {
    if let Some(dir) = from_env(ENV_CHECKPOINT_DIR) {
        return dir;
    }
    let local = PathBuf::from("checkpoints");
    if local.is_dir() {
        return local;
    }
    data_dir().join("checkpoints")
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a reader (or a crash) never sees a half-written file. The file is synced before the
/// rename and the directory after it, so the new contents survive a power cut once this
/// returns.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, true)
}

/// [`write_atomic`] without waiting for the disk: still never half-written, for files that
/// are rewritten often and need no durability (a running run's status).
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, false)
}

/// Creates a new temporary file beside `path` for writing: a name no other writer uses
/// (this process's pid and a counter), created exclusively (`O_EXCL`: an existing file or a
/// symbolic link planted there is never opened, written through or truncated).
pub fn create_temporary(path: &Path) -> Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let mut last = None;
    for _ in 0..100 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_file_name(format!(".{file_name}.{}-{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            // Left by a process that had this pid before, or planted: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", tmp.display()));
            }
        }
    }
    Err(last.expect("tried at least once"))
        .with_context(|| format!("cannot create a temporary file beside {}", path.display()))
}

/// Syncs a directory's entries (a rename into it) to disk. Some file systems cannot sync a
/// directory; the rename itself has happened either way, so that is not an error.
pub fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn write_atomic_with(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let (tmp, mut f) = create_temporary(path)?;
    let result = (|| -> std::io::Result<()> {
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    if sync {
        sync_dir(dir.unwrap_or(Path::new(".")));
    }
    Ok(())
}

/// Refuses a name that cannot be one folder directly under the checkpoint dir (a run, a
/// sweep's model, a queued request): empty, with a '/' or '\\', a leading '.', or a control
/// character. `what` says which name it is (`run name`, `model name`).
pub fn check_folder_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains('/')
        || name.contains('\\')
        || name.chars().any(|c| c.is_control())
    {
        anyhow::bail!(
            "{what} `{}` is not usable as a folder name (no '/', no leading '.')",
            name.escape_debug()
        );
    }
    Ok(())
}

/// Shows a path relative to the current directory when it lies below it.
pub fn display(path: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rel) = path.strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_are_one_plain_component() {
        for ok in ["m1", "tiny-0101-120000", "a b", "ünï"] {
            check_folder_name("run name", ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "../x", "a/b", "a\\b", "tab\there"] {
            let e = check_folder_name("model name", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "model name `{}` is not usable as a folder name",
                    bad.escape_debug()
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "only the target remains: {names:?}");
    }

    /// Writers of one file in one process never share a temporary file: each write lands
    /// whole, none fails.
    #[test]
    fn concurrent_writers_of_one_file_each_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status.json");
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let text = format!("writer {w} write {i} {}", "x".repeat(4096 * w));
                        write_atomic_unsynced(&p, text.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let w: usize = text.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(text.len(), format!("writer {w} write 49 ").len() + 4096 * w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A symbolic link where a temporary file would go is never written through.
    #[test]
    fn planted_links_at_temporary_names_are_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let p = dir.path().join("b.txt");
        let pid = std::process::id();
        // The name this module used to write through, and the next ones it will try.
        symlink(&victim, dir.path().join(format!(".b.txt.{pid}.tmp"))).unwrap();
        let (probe, f) = create_temporary(&p).unwrap();
        drop(f);
        std::fs::remove_file(&probe).unwrap();
        let next: u64 = probe
            .to_string_lossy()
            .rsplit_once('-')
            .and_then(|(_, n)| n.strip_suffix(".tmp")?.parse().ok())
            .unwrap();
        for n in next + 1..next + 50 {
            symlink(&victim, dir.path().join(format!(".b.txt.{pid}-{n}.tmp"))).unwrap();
        }
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }
}
