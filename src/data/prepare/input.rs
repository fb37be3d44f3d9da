//! The text `data prepare` reads, piece by piece: `.txt` files (each one document),
//! JSON-lines files (each line one document, its text in `--text-field`), either of them
//! gzip-compressed. Pieces are cut where a byte-level (GPT-2 regex) pre-tokenizer always
//! splits, so encoding the pieces gives exactly the tokens of the whole text.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::cut::find_cut;
pub use super::cut::{cut_text, Cutting};

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

enum Reader {
    Text {
        r: Box<dyn Read + Send>,
        buf: Vec<u8>,
        /// Offset in the document of `buf[0]`.
        offset: u64,
        eof: bool,
    },
    Json {
        r: BufReader<Box<dyn Read + Send>>,
        line: usize,
        pieces: std::collections::VecDeque<String>,
    },
}

/// The pieces of every source in order, with a [`Item::DocBreak`] between documents.
pub struct TextStream {
    sources: Vec<Source>,
    next_source: usize,
    current: Option<(usize, Reader)>,
    cut: Cutting,
    text_field: String,
    /// Stop after this many bytes of text (the tokenizer's training sample).
    limit: Option<u64>,
    emitted: u64,
    docs: u64,
    progress: Option<indicatif::ProgressBar>,
}

const READ_BLOCK: usize = 1 << 20;

impl TextStream {
    pub fn new(sources: &[Source], cut: Cutting, text_field: &str) -> TextStream {
        TextStream {
            sources: sources.to_vec(),
            next_source: 0,
            current: None,
            cut,
            text_field: text_field.to_string(),
            limit: None,
            emitted: 0,
            docs: 0,
            progress: None,
        }
    }

    pub fn with_limit(mut self, bytes: u64) -> Self {
        self.limit = Some(bytes);
        self
    }

    pub fn with_progress(mut self, bar: indicatif::ProgressBar) -> Self {
        self.progress = Some(bar);
        self
    }

    /// Bytes of text handed out so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    fn piece(&mut self, bytes: Vec<u8>, src: usize, offset: u64) -> Result<Item> {
        self.emitted += bytes.len() as u64;
        let text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: not UTF-8 text (invalid byte at offset {})",
                self.sources[src].name,
                offset + e.utf8_error().valid_up_to() as u64
            )
        })?;
        Ok(Item::Text(text, src))
    }

    fn step(&mut self) -> Result<Option<Item>> {
        loop {
            if self.limit.is_some_and(|l| self.emitted >= l) {
                return Ok(None);
            }
            let Some((src, reader)) = self.current.as_mut() else {
                if self.next_source == self.sources.len() {
                    return Ok(None);
                }
                let s = &self.sources[self.next_source];
                let r = s.open(self.progress.clone())?;
                let reader = match s.format {
                    Format::Text => Reader::Text {
                        r,
                        buf: Vec::new(),
                        offset: 0,
                        eof: false,
                    },
                    Format::JsonLines => Reader::Json {
                        r: BufReader::with_capacity(1 << 20, r),
                        line: 0,
                        pieces: Default::default(),
                    },
                };
                self.current = Some((self.next_source, reader));
                self.next_source += 1;
                if s.format == Format::Text {
                    self.docs += 1;
                    if self.docs > 1 {
                        return Ok(Some(Item::DocBreak));
                    }
                }
                continue;
            };
            let src = *src;
            let name = &self.sources[src].name;
            match reader {
                Reader::Text {
                    r,
                    buf,
                    offset,
                    eof,
                } => {
                    if let Some(p) = find_cut(buf, self.cut, *eof) {
                        let rest = buf.split_off(p);
                        let piece = std::mem::replace(buf, rest);
                        let at = *offset;
                        *offset += p as u64;
                        return self.piece(piece, src, at).map(Some);
                    }
                    if *eof {
                        let (piece, at) = (std::mem::take(buf), *offset);
                        self.current = None;
                        if piece.is_empty() {
                            continue;
                        }
                        return self.piece(piece, src, at).map(Some);
                    }
                    let start = buf.len();
                    buf.resize(start + READ_BLOCK, 0);
                    let mut filled = start;
                    while filled < buf.len() {
                        match r.read(&mut buf[filled..]) {
                            Ok(0) => {
                                *eof = true;
                                break;
                            }
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                return Err(e).with_context(|| {
                                    format!("{name}: cannot read (a damaged .gz file?)")
                                })
                            }
                        }
                    }
                    buf.truncate(filled);
                }
                Reader::Json { r, line, pieces } => {
                    if let Some(p) = pieces.pop_front() {
                        self.emitted += p.len() as u64;
                        return Ok(Some(Item::Text(p, src)));
                    }
                    let mut raw = Vec::new();
                    *line += 1;
                    let n = r
                        .read_until(b'\n', &mut raw)
                        .with_context(|| format!("{name}: cannot read (a damaged .gz file?)"))?;
                    if n == 0 {
                        self.current = None;
                        continue;
                    }
                    let l = *line;
                    let text = std::str::from_utf8(&raw)
                        .map_err(|_| anyhow::anyhow!("{name}:{l}: not UTF-8 text"))?;
                    if text.trim().is_empty() {
                        continue;
                    }
                    let mut v: serde_json::Value = serde_json::from_str(text)
                        .with_context(|| format!("{name}:{l}: not a JSON line"))?;
                    let Some(serde_json::Value::String(doc)) =
                        v.get_mut(&self.text_field).map(serde_json::Value::take)
                    else {
                        bail!(
                            "{name}:{l}: no string field `{}` (set the field holding the text with --text-field)",
                            self.text_field
                        );
                    };
                    pieces.extend(cut_text(&doc, self.cut).into_iter().map(str::to_string));
                    self.docs += 1;
                    if self.docs > 1 {
                        return Ok(Some(Item::DocBreak));
                    }
                }
            }
        }
    }
}

impl Iterator for TextStream {
    type Item = Result<Item>;
    fn next(&mut self) -> Option<Result<Item>> {
        match self.step() {
            Ok(item) => item.map(Ok),
            Err(e) => {
                // Nothing more after an error.
                self.next_source = self.sources.len();
                self.current = None;
                Some(Err(e))
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const CUT: Cutting = Cutting {
        target: 37,
        hard_max: 1000,
    };

    #[test]
    fn the_stream_matches_the_whole_text_for_any_block_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = "First line\n  second\nthird, très bien\n".repeat(400);
        std::fs::write(dir.path().join("a.txt"), &a).unwrap();
        std::fs::write(dir.path().join("b.txt"), "").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            b"{\"text\": \"one\\ntwo\"}\n\n{\"id\": 2, \"text\": \"three\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.jsonl.gz"), gz.finish().unwrap()).unwrap();
        let sources = list_inputs(dir.path()).unwrap();
        let items: Vec<Item> = TextStream::new(&sources, CUT, "text")
            .collect::<Result<_>>()
            .unwrap();
        let mut joined = String::new();
        for i in &items {
            match i {
                Item::Text(t, _) => joined.push_str(t),
                Item::DocBreak => joined.push('|'),
            }
        }
        assert_eq!(joined, format!("{a}||one\ntwo|three"));
        assert!(items.len() > 30, "the long document comes in pieces");

        let e = TextStream::new(&sources, CUT, "body")
            .collect::<Result<Vec<_>>>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.jsonl.gz:1: no string field `body`"), "{e}");
    }
}
