//! The modded-nanogpt shard format: a header of 256 little-endian int32 (`[0]` magic
//! 20240520, `[1]` version 1, `[2]` token count), then that many little-endian uint16 tokens.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const SHARD_MAGIC: i32 = 20240520;
pub const SHARD_VERSION: i32 = 1;
pub const HEADER_INTS: usize = 256;
pub const HEADER_BYTES: usize = HEADER_INTS * 4;

/// A memory-mapped shard whose header and size have been checked.
pub struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
    len: usize,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish()
    }
}

/// Reads and checks just the header: the token count a shard claims, or why it is invalid.
pub fn read_header(path: &Path) -> Result<usize> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot open shard {}", path.display()))?;
    let mut header = [0u8; HEADER_BYTES];
    let size = meta.len();
    if size < HEADER_BYTES as u64 {
        bail!(
            "shard {}: file is {size} bytes, shorter than the {HEADER_BYTES}-byte header",
            path.display()
        );
    }
    use std::io::Read;
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("cannot read the header of shard {}", path.display()))?;
    check_header(path, &header, size)
}

/// Checks a shard header against the size of the whole file: the token count, or why the
/// file is not a shard. `path` only names the file in the message.
pub fn check_header(path: &Path, header: &[u8], file_size: u64) -> Result<usize> {
    if header.len() < HEADER_BYTES {
        bail!(
            "shard {}: a header of {} bytes, shorter than the {HEADER_BYTES}-byte header",
            path.display(),
            header.len()
        );
    }
    let int = |i: usize| i32::from_le_bytes(header[4 * i..4 * i + 4].try_into().unwrap());
    let (magic, version, count) = (int(0), int(1), int(2));
    if magic != SHARD_MAGIC {
        bail!(
            "shard {}: wrong magic number {magic} (expected {SHARD_MAGIC}): not a modded-nanogpt token shard",
            path.display()
        );
    }
    if version != SHARD_VERSION {
        bail!(
            "shard {}: unsupported version {version} (expected {SHARD_VERSION})",
            path.display()
        );
    }
    if count < 0 {
        bail!(
            "shard {}: negative token count {count} in the header",
            path.display()
        );
    }
    let expected = HEADER_BYTES as u64 + 2 * count as u64;
    if file_size != expected {
        bail!(
            "shard {}: header says {count} tokens ({expected} bytes with the header) but the file has {file_size} bytes",
            path.display()
        );
    }
    Ok(count as usize)
}

impl Shard {
    pub fn open(path: &Path) -> Result<Shard> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open shard {}", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot stat shard {}", path.display()))?
            .len();
        if size < HEADER_BYTES as u64 {
            bail!(
                "shard {}: file is {size} bytes, shorter than the {HEADER_BYTES}-byte header",
                path.display()
            );
        }
        // SAFETY: the map is read-only; a shard rewritten underneath a run is the user's
        // doing, and stacklab itself replaces shards only by renaming new files into place.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot memory-map shard {}", path.display()))?;
        let len = check_header(path, &map[..HEADER_BYTES], size)?;
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn token(&self, i: usize) -> u16 {
        let o = HEADER_BYTES + 2 * i;
        u16::from_le_bytes([self.map[o], self.map[o + 1]])
    }

    /// Tokens `[start, start + n)` widened to i64 (what libtorch indexes with).
    pub fn window_i64(&self, start: usize, n: usize) -> Vec<i64> {
        let bytes = &self.map[HEADER_BYTES + 2 * start..HEADER_BYTES + 2 * (start + n)];
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
            .collect()
    }

    /// The largest token id in the shard (to check it against a model's vocabulary).
    pub fn max_token(&self) -> Option<u16> {
        self.map[HEADER_BYTES..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .max()
    }
}

/// Encodes a shard into bytes.
pub fn encode(tokens: &[u16]) -> Result<Vec<u8>> {
    if tokens.len() > i32::MAX as usize {
        bail!(
            "{} tokens do not fit one shard (at most {})",
            tokens.len(),
            i32::MAX
        );
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + 2 * tokens.len());
    out.extend_from_slice(&header_bytes(tokens.len()));
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    Ok(out)
}

/// The 1,024-byte header of a shard of `count` tokens.
pub fn header_bytes(count: usize) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[0..4].copy_from_slice(&SHARD_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&SHARD_VERSION.to_le_bytes());
    out[8..12].copy_from_slice(&(count as i32).to_le_bytes());
    out
}

/// Writes a shard atomically (temporary file, then rename).
pub fn write(path: &Path, tokens: &[u16]) -> Result<()> {
    crate::paths::write_atomic(path, &encode(tokens)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_shorter_than_a_header_is_an_error_not_a_panic() {
        let p = Path::new("short.bin");
        for n in [0, 3, 11, HEADER_BYTES - 1] {
            let e = check_header(p, &vec![0u8; n], n as u64).unwrap_err();
            assert!(e.to_string().contains("short.bin"), "{e}");
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.bin");
        let toks: Vec<u16> = (0..1000u32).map(|i| (i * 7919 % 65536) as u16).collect();
        write(&p, &toks).unwrap();
        let s = Shard::open(&p).unwrap();
        assert_eq!(s.len(), 1000);
        assert_eq!(read_header(&p).unwrap(), 1000);
        let back: Vec<u16> = (0..1000).map(|i| s.token(i)).collect();
        assert_eq!(back, toks);
        assert_eq!(
            s.window_i64(10, 3),
            vec![toks[10] as i64, toks[11] as i64, toks[12] as i64]
        );
        assert_eq!(s.max_token(), toks.iter().copied().max());
        // Exactly the documented layout.
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 1024 + 2000);
        assert_eq!(&bytes[0..4], &20240520i32.to_le_bytes());
        assert_eq!(&bytes[4..8], &1i32.to_le_bytes());
        assert_eq!(&bytes[8..12], &1000i32.to_le_bytes());
    }

    fn malformed(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.bin");
        std::fs::write(&p, bytes).unwrap();
        let a = Shard::open(&p).unwrap_err().to_string();
        let b = read_header(&p).unwrap_err().to_string();
        assert_eq!(a, b, "open and read_header agree");
        assert!(a.contains("bad.bin"), "names the file: {a}");
        a
    }

    #[test]
    fn malformed_shards_are_refused_with_what_was_found() {
        let good = encode(&[1, 2, 3, 4]).unwrap();

        let mut wrong_magic = good.clone();
        wrong_magic[0..4].copy_from_slice(&12345i32.to_le_bytes());
        let e = malformed(&wrong_magic);
        assert!(
            e.contains("wrong magic number 12345 (expected 20240520)"),
            "{e}"
        );

        let mut wrong_version = good.clone();
        wrong_version[4..8].copy_from_slice(&7i32.to_le_bytes());
        let e = malformed(&wrong_version);
        assert!(e.contains("unsupported version 7 (expected 1)"), "{e}");

        let truncated = &good[..good.len() - 1];
        let e = malformed(truncated);
        assert!(
            e.contains(
                "header says 4 tokens (1032 bytes with the header) but the file has 1031 bytes"
            ),
            "{e}"
        );

        let mut longer = good.clone();
        longer.extend_from_slice(&[0, 0]);
        let e = malformed(&longer);
        assert!(e.contains("but the file has 1034 bytes"), "{e}");

        let e = malformed(&good[..100]);
        assert!(
            e.contains("file is 100 bytes, shorter than the 1024-byte header"),
            "{e}"
        );

        let mut negative = good.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_le_bytes());
        let e = malformed(&negative);
        assert!(e.contains("negative token count -5"), "{e}");
    }
}
