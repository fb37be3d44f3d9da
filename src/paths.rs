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
/// so a reader (or a crash) never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, true)
}

/// [`write_atomic`] without waiting for the disk: still never half-written, for files that
/// are rewritten often and need no durability (a run's status).
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, false)
}

fn write_atomic_with(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
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
        anyhow::bail!("{what} `{name}` is not usable as a folder name (no '/', no leading '.')");
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
                    "model name `{bad}` is not usable as a folder name"
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
}
