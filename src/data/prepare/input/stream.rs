//! [`TextStream`]: the pieces of every source in order, read block by block (text) or line
//! by line (JSON lines), with a document break between documents.

use std::io::{BufRead, BufReader, Read};

use anyhow::{bail, Context, Result};

use super::{cut_text, Cutting, Format, Item, Source};
use crate::data::prepare::cut::find_cut;

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
                if self.open_next()? && self.new_document() {
                    return Ok(Some(Item::DocBreak));
                }
                continue;
            };
            let src = *src;
            match reader.next(self.cut, &self.text_field, &self.sources[src].name)? {
                Got::Bytes(piece, at) => return self.piece(piece, src, at).map(Some),
                Got::Last(piece, at) => {
                    self.current = None;
                    if !piece.is_empty() {
                        return self.piece(piece, src, at).map(Some);
                    }
                }
                Got::Text(p) => {
                    self.emitted += p.len() as u64;
                    return Ok(Some(Item::Text(p, src)));
                }
                Got::Document => {
                    if self.new_document() {
                        return Ok(Some(Item::DocBreak));
                    }
                }
                Got::End => self.current = None,
                Got::Again => {}
            }
        }
    }

    /// Opens the next source; whether that begins a document (a text file is one).
    fn open_next(&mut self) -> Result<bool> {
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
        let text = s.format == Format::Text;
        self.current = Some((self.next_source, reader));
        self.next_source += 1;
        Ok(text)
    }

    /// Counts a document; whether a break goes before it (every one but the first).
    fn new_document(&mut self) -> bool {
        self.docs += 1;
        self.docs > 1
    }
}

/// What a reader gave on one step.
enum Got {
    /// Bytes of text from this offset of the document.
    Bytes(Vec<u8>, u64),
    /// The last bytes of the file (perhaps none), from this offset.
    Last(Vec<u8>, u64),
    /// A piece of a JSON line's text.
    Text(String),
    /// A JSON line began a document.
    Document,
    /// The source has nothing more.
    End,
    /// Nothing to hand out yet: step again.
    Again,
}

impl Reader {
    fn next(&mut self, cut: Cutting, text_field: &str, name: &str) -> Result<Got> {
        match self {
            Reader::Text {
                r,
                buf,
                offset,
                eof,
            } => {
                if let Some(p) = find_cut(buf, cut, *eof) {
                    let rest = buf.split_off(p);
                    let piece = std::mem::replace(buf, rest);
                    let at = *offset;
                    *offset += p as u64;
                    return Ok(Got::Bytes(piece, at));
                }
                if *eof {
                    return Ok(Got::Last(std::mem::take(buf), *offset));
                }
                *eof = read_block(r, buf, name)?;
                Ok(Got::Again)
            }
            Reader::Json { r, line, pieces } => {
                if let Some(p) = pieces.pop_front() {
                    return Ok(Got::Text(p));
                }
                *line += 1;
                let Some(doc) = read_json_line(r, *line, text_field, name)? else {
                    return Ok(Got::End);
                };
                match doc {
                    Some(doc) => {
                        pieces.extend(cut_text(&doc, cut).into_iter().map(str::to_string));
                        Ok(Got::Document)
                    }
                    None => Ok(Got::Again),
                }
            }
        }
    }
}

/// Appends up to a block of `r` to `buf`; whether `r` ended.
fn read_block(r: &mut Box<dyn Read + Send>, buf: &mut Vec<u8>, name: &str) -> Result<bool> {
    let start = buf.len();
    buf.resize(start + READ_BLOCK, 0);
    let mut filled = start;
    let mut eof = false;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(e).with_context(|| format!("{name}: cannot read (a damaged .gz file?)"))
            }
        }
    }
    buf.truncate(filled);
    Ok(eof)
}

/// The text field of JSON line number `l`: `None` at the end of the file, `Some(None)` for
/// a blank line.
fn read_json_line(
    r: &mut BufReader<Box<dyn Read + Send>>,
    l: usize,
    text_field: &str,
    name: &str,
) -> Result<Option<Option<String>>> {
    let mut raw = Vec::new();
    let n = r
        .read_until(b'\n', &mut raw)
        .with_context(|| format!("{name}: cannot read (a damaged .gz file?)"))?;
    if n == 0 {
        return Ok(None);
    }
    let text =
        std::str::from_utf8(&raw).map_err(|_| anyhow::anyhow!("{name}:{l}: not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Ok(Some(None));
    }
    let mut v: serde_json::Value =
        serde_json::from_str(text).with_context(|| format!("{name}:{l}: not a JSON line"))?;
    let Some(serde_json::Value::String(doc)) = v.get_mut(text_field).map(serde_json::Value::take)
    else {
        bail!(
            "{name}:{l}: no string field `{text_field}` (set the field holding the text with --text-field)"
        );
    };
    Ok(Some(Some(doc)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::prepare::input::list_inputs;

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
