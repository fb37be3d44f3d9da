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
