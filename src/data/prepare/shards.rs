//! Writing shards as tokens arrive, and moving the tail of a written series into another
//! series (the validation split by fraction, known only once every token is written).

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::data::shard::{header_bytes, read_header, HEADER_BYTES};

/// Writes `{prefix}_{i:06}.bin` files of at most `shard_tokens` tokens into `dir`, each
/// written straight to disk as it fills (the header is completed when the shard closes).
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    shard_tokens: usize,
    current: Option<OpenShard>,
    names: Vec<String>,
    total: usize,
    bytes: Vec<u8>,
}

struct OpenShard {
    file: BufWriter<File>,
    path: PathBuf,
    count: usize,
}

impl ShardWriter {
    pub fn new(dir: &Path, prefix: &str, shard_tokens: usize) -> ShardWriter {
        ShardWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            shard_tokens: shard_tokens.max(1),
            current: None,
            names: Vec::new(),
            total: 0,
            bytes: Vec::new(),
        }
    }

    /// Tokens written so far.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn push(&mut self, mut tokens: &[u16]) -> Result<()> {
        while !tokens.is_empty() {
            if self.current.is_none() {
                let name = format!("{}_{:06}.bin", self.prefix, self.names.len());
                let path = self.dir.join(&name);
                let file = File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let mut file = BufWriter::with_capacity(1 << 20, file);
                file.write_all(&header_bytes(0))
                    .with_context(|| format!("cannot write {}", path.display()))?;
                self.names.push(name);
                self.current = Some(OpenShard {
                    file,
                    path,
                    count: 0,
                });
            }
            let cur = self.current.as_mut().expect("opened above");
            let n = (self.shard_tokens - cur.count).min(tokens.len());
            self.bytes.clear();
            self.bytes
                .extend(tokens[..n].iter().flat_map(|t| t.to_le_bytes()));
            cur.file
                .write_all(&self.bytes)
                .with_context(|| format!("cannot write {}", cur.path.display()))?;
            cur.count += n;
            self.total += n;
            tokens = &tokens[n..];
            if cur.count == self.shard_tokens {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        if let Some(cur) = self.current.take() {
            let what = || format!("cannot write {}", cur.path.display());
            let mut file = cur
                .file
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(what)?;
            file.seek(SeekFrom::Start(0)).with_context(what)?;
            file.write_all(&header_bytes(cur.count))
                .with_context(what)?;
            file.sync_all().with_context(what)?;
        }
        Ok(())
    }

    /// Closes the last shard; returns the shard file names and the number of tokens.
    pub fn finish(mut self) -> Result<(Vec<String>, usize)> {
        self.close_current()?;
        Ok((std::mem::take(&mut self.names), self.total))
    }
}

/// Keeps the first `keep` tokens of the series `names` (shards of `shard_tokens` tokens in
/// `dir`) and moves the rest, in order, into `to`. Returns the names that remain.
pub fn move_tail(
    dir: &Path,
    names: &[String],
    shard_tokens: usize,
    keep: usize,
    to: &mut ShardWriter,
) -> Result<Vec<String>> {
    let first = keep / shard_tokens;
    let mut buf = vec![0u8; 8 << 20];
    let mut tokens: Vec<u16> = Vec::with_capacity(buf.len() / 2);
    for (j, name) in names.iter().enumerate().skip(first) {
        let path = dir.join(name);
        let count = read_header(&path)?;
        let start = if j == first {
            keep - j * shard_tokens
        } else {
            0
        };
        if start > count {
            bail!(
                "{}: holds {count} tokens, fewer than the {start} expected",
                path.display()
            );
        }
        let mut f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        f.seek(SeekFrom::Start((HEADER_BYTES + 2 * start) as u64))?;
        let mut left = 2 * (count - start);
        while left > 0 {
            let n = left.min(buf.len());
            f.read_exact(&mut buf[..n])
                .with_context(|| format!("cannot read {}", path.display()))?;
            tokens.clear();
            tokens.extend(
                buf[..n]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]])),
            );
            to.push(&tokens)?;
            left -= n;
        }
    }
    let mut kept = names[..first.min(names.len())].to_vec();
    let rest = keep - first * shard_tokens;
    if rest > 0 {
        let path = dir.join(&names[first]);
        let what = || format!("cannot shorten {}", path.display());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(what)?;
        f.set_len((HEADER_BYTES + 2 * rest) as u64)
            .with_context(what)?;
        f.write_all(&header_bytes(rest)).with_context(what)?;
        f.sync_all().with_context(what)?;
        kept.push(names[first].clone());
    }
    for name in &names[kept.len()..] {
        let path = dir.join(name);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Shard;

    fn read_series(dir: &Path, names: &[String]) -> Vec<u16> {
        let mut out = Vec::new();
        for n in names {
            let s = Shard::open(&dir.join(n)).unwrap();
            out.extend((0..s.len()).map(|i| s.token(i)));
        }
        out
    }

    #[test]
    fn writer_fills_shards_and_the_tail_moves_exactly() {
        let toks: Vec<u16> = (0..1000u32).map(|i| (i * 31 % 65536) as u16).collect();
        for (shard_tokens, keep) in [(100, 950), (100, 900), (300, 1), (1000, 500), (7, 999)] {
            let dir = tempfile::tempdir().unwrap();
            let mut w = ShardWriter::new(dir.path(), "train", shard_tokens);
            for piece in toks.chunks(37) {
                w.push(piece).unwrap();
            }
            let (names, total) = w.finish().unwrap();
            assert_eq!(total, 1000);
            assert_eq!(names.len(), 1000usize.div_ceil(shard_tokens));
            assert_eq!(read_series(dir.path(), &names), toks);

            let mut val = ShardWriter::new(dir.path(), "val", shard_tokens);
            let kept = move_tail(dir.path(), &names, shard_tokens, keep, &mut val).unwrap();
            let (val_names, n_val) = val.finish().unwrap();
            assert_eq!(n_val, 1000 - keep);
            assert_eq!(read_series(dir.path(), &kept), toks[..keep]);
            assert_eq!(read_series(dir.path(), &val_names), toks[keep..]);
            // Exactly the shards a split of the whole stream would have made.
            assert_eq!(kept.len(), keep.div_ceil(shard_tokens));
            assert_eq!(val_names.len(), (1000 - keep).div_ceil(shard_tokens));
            let on_disk = std::fs::read_dir(dir.path()).unwrap().count();
            assert_eq!(on_disk, kept.len() + val_names.len(), "no file left over");
        }
    }
}
