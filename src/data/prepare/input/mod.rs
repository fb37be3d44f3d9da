//! The text `data prepare` reads, piece by piece: `.txt` files (each one document),
//! JSON-lines files (each line one document, its text in `--text-field`), either of them
//! gzip-compressed. Pieces are cut where a byte-level (GPT-2 regex) pre-tokenizer always
//! splits, so encoding the pieces gives exactly the tokens of the whole text.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use super::cut::{cut_text, Cutting};
pub use stream::TextStream;

mod stream;

/// A piece of text, or the boundary between two documents.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Text of the source with this index.
    Text(String, usize),
    DocBreak,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Text,
    JsonLines,
}

#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Bytes(&'static [u8]),
}

/// One input file (or an embedded one).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub format: Format,
    /// Bytes as stored (compressed for `.gz`), for progress.
    pub size: u64,
    origin: Origin,
}

impl Source {
    pub fn bytes(name: &str, bytes: &'static [u8], format: Format) -> Source {
        Source {
            name: name.to_string(),
            format,
            size: bytes.len() as u64,
            origin: Origin::Bytes(bytes),
        }
    }

    fn open(&self, progress: Option<indicatif::ProgressBar>) -> Result<Box<dyn Read + Send>> {
        let raw: Box<dyn Read + Send> = match &self.origin {
            Origin::File(p) => Box::new(
                std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
            ),
            Origin::Bytes(b) => Box::new(*b),
        };
        let mut raw = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: raw,
                progress,
            },
        );
        let gz = raw
            .fill_buf()
            .with_context(|| format!("cannot read {}", self.name))?
            .starts_with(&[0x1f, 0x8b]);
        Ok(if gz {
            Box::new(flate2::bufread::MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        })
    }
}

struct Counting {
    inner: Box<dyn Read + Send>,
    progress: Option<indicatif::ProgressBar>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            p.inc(n as u64);
        }
        Ok(n)
    }
}

fn format_of(p: &Path) -> Option<Format> {
    let n = p.file_name()?.to_string_lossy().to_lowercase();
    if n.ends_with(".txt") || n.ends_with(".txt.gz") {
        Some(Format::Text)
    } else if n.ends_with(".jsonl") || n.ends_with(".jsonl.gz") {
        Some(Format::JsonLines)
    } else {
        None
    }
}

/// The sources of `--input`: one `.txt`/`.jsonl` file (optionally `.gz`), or every such file
/// in a folder (sorted by path, searched recursively).
pub fn list_inputs(path: &Path) -> Result<Vec<Source>> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in
                std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
            {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if format_of(&p).is_some() {
                    files.push(p);
                }
            }
        }
        files.sort();
        if files.is_empty() {
            bail!(
                "--input {}: the folder holds no .txt, .jsonl, .txt.gz or .jsonl.gz files",
                path.display()
            );
        }
    } else if path.is_file() {
        if format_of(path).is_none() {
            bail!(
                "--input {}: expected a .txt or .jsonl file (optionally .gz), or a folder of them",
                path.display()
            );
        }
        files.push(path.to_path_buf());
    } else {
        bail!("--input {}: no such file or folder", path.display());
    }
    files
        .into_iter()
        .map(|f| {
            let size = std::fs::metadata(&f)
                .with_context(|| format!("cannot read {}", f.display()))?
                .len();
            Ok(Source {
                name: f.display().to_string(),
                format: format_of(&f).expect("filtered above"),
                size,
                origin: Origin::File(f),
            })
        })
        .collect()
}

/// One whole document (tests and small inputs).
#[derive(Debug, Clone)]
pub struct Document {
    pub name: String,
    pub text: String,
}

/// Reads text from `bytes` that may be gzip-compressed.
pub fn document_from_bytes(name: &str, bytes: &[u8]) -> Result<Document> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .with_context(|| format!("{name}: not a valid gzip file"))?;
        out
    } else {
        bytes.to_vec()
    };
    let text = String::from_utf8(raw).map_err(|e| {
        anyhow::anyhow!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(Document {
        name: name.to_string(),
        text,
    })
}
