//! What the fuzz targets share: a scratch folder per process (the parsers under test read
//! files, as stacklab does), and splitting one input into the parts a target needs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch folder (under `$TMPDIR`; scripts/fuzz.sh points it at /dev/shm).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("stacklab-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("a scratch folder");
        d
    })
}

/// Writes `bytes` to `name` in the scratch folder and returns its path.
pub fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("a scratch subfolder");
    }
    std::fs::write(&p, bytes).expect("a scratch file");
    p
}

/// Splits at the first NUL byte: text formats (TOML, CSV) cannot hold one, so a seed is
/// `text \0 rest` and libFuzzer mutates both sides.
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The message of an error with its causes, as stacklab prints it.
pub fn message(e: &anyhow::Error) -> String {
    format!("{e:#}")
}
