//! Whether two reads share tokens: a stitch fitted on the probe it is scored on, or any
//! other fit scored on its own data, looks far better than it is. Two spans share tokens
//! when they are the same file (the same path, or a copy: same size and SHA-256) and their
//! token ranges intersect.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::TokenSpan;

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `a` and `b` hold the same bytes; hashes are computed once per file, and only
/// for files of equal size.
fn same_file(a: &Path, b: &Path, hashes: &mut BTreeMap<PathBuf, String>) -> Result<bool> {
    let (ca, cb) = (canonical(a), canonical(b));
    if ca == cb {
        return Ok(true);
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if size(&ca).is_none() || size(&ca) != size(&cb) {
        return Ok(false);
    }
    let mut hash = |p: &PathBuf| -> Result<String> {
        if let Some(h) = hashes.get(p) {
            return Ok(h.clone());
        }
        let h = crate::hash::sha256_file(p)?;
        hashes.insert(p.clone(), h.clone());
        Ok(h)
    };
    Ok(hash(&ca)? == hash(&cb)?)
}

/// Refuses reads `a` (named `what_a`) and `b` (`what_b`) that share a token, naming both
/// files and ranges.
pub fn refuse_overlap(a: &[TokenSpan], b: &[TokenSpan], what_a: &str, what_b: &str) -> Result<()> {
    let mut hashes = BTreeMap::new();
    for x in a {
        for y in b {
            if x.start < y.end && y.start < x.end && same_file(&x.file, &y.file, &mut hashes)? {
                let same = if canonical(&x.file) == canonical(&y.file) {
                    "the same file"
                } else {
                    "files with the same content"
                };
                bail!(
                    "{what_a} overlap {what_b}: tokens [{}, {}) of {} and tokens [{}, {}) of {} ({same}); a fit scored on its own tokens looks better than it is: give training shards that are not the probe (e.g. --train-data the models' train glob)",
                    x.start,
                    x.end,
                    x.file.display(),
                    y.start,
                    y.end,
                    y.file.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(f: &Path, s: usize, e: usize) -> TokenSpan {
        TokenSpan {
            file: f.to_path_buf(),
            start: s,
            end: e,
        }
    }

    #[test]
    fn the_same_tokens_of_the_same_or_a_copied_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.bin"),
            dir.path().join("b.bin"),
            dir.path().join("c.bin"),
        );
        std::fs::write(&a, b"0123456789").unwrap();
        std::fs::write(&b, b"0123456789").unwrap();
        std::fs::write(&c, b"abcdefghij").unwrap();
        let e = refuse_overlap(&[span(&a, 0, 5)], &[span(&a, 4, 9)], "fit", "probe")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fit overlap probe: tokens [0, 5) of"), "{e}");
        assert!(e.contains("(the same file)"), "{e}");
        let e = refuse_overlap(&[span(&a, 0, 5)], &[span(&b, 0, 5)], "fit", "probe")
            .unwrap_err()
            .to_string();
        assert!(e.contains("files with the same content"), "{e}");
        // Disjoint ranges of one file, and another file of the same size, are fine.
        refuse_overlap(&[span(&a, 0, 5)], &[span(&a, 5, 9)], "fit", "probe").unwrap();
        refuse_overlap(&[span(&a, 0, 5)], &[span(&c, 0, 5)], "fit", "probe").unwrap();
    }
}
