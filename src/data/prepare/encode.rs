//! Training a byte-level BPE on a bounded sample, and encoding the text stream on all cores
//! in order.

use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rayon::prelude::*;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::input::{Cutting, Item, Source, TextStream};
use super::EOT;

/// Pieces for encoding: the GPT-2 regex always splits where they are cut. Encoding takes
/// tens of bytes of transient memory per byte of text (pre-tokenized splits, byte
/// alignments, token strings), so pieces stay small: 64 KiB pieces peak 66 MB lower than
/// 256 KiB ones on 2 threads, with the same tokens.
pub const PIECE: Cutting = Cutting {
    target: 64 << 10,
    hard_max: 64 << 20,
};

/// Pieces of the BPE's training sample, cut where the GPT-2 regex splits (so the word
/// counts, and the tokenizer, do not depend on it). The trainer pre-tokenizes each piece
/// into a word list and a count map of its own before merging them: 64 KiB pieces instead
/// of 1 MiB took the training's peak on a 20 MB sample from 440 MB to 207 MB.
const SAMPLE_PIECE: Cutting = Cutting {
    target: 64 << 10,
    hard_max: 64 << 20,
};
/// A tokenizer that may not split there (a normalizer, another pre-tokenizer) gets whole
/// documents up to this size; longer ones are still cut, at line starts.
pub const WHOLE: Cutting = Cutting {
    target: 64 << 20,
    hard_max: 256 << 20,
};

/// Trains a GPT-2-style byte-level BPE (with `<|endoftext|>` as token 0) on the first
/// `sample_bytes` of text of the sources. Returns it with the bytes it was trained on.
pub fn train_bpe(
    sources: &[Source],
    text_field: &str,
    vocab_size: usize,
    sample_bytes: u64,
) -> Result<(Tokenizer, u64)> {
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(byte_level));
    tokenizer.with_post_processor(Some(byte_level));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let used = Mutex::new(0u64);
    let mut stream = TextStream::new(sources, SAMPLE_PIECE, text_field).with_limit(sample_bytes);
    let texts = std::iter::from_fn(|| loop {
        match stream.next()? {
            Ok(Item::Text(t, _)) => {
                *used.lock().unwrap() = stream.emitted();
                return Some(t);
            }
            Ok(Item::DocBreak) => continue,
            Err(e) => {
                *failure.lock().unwrap() = Some(e);
                return None;
            }
        }
    });
    let trained = tokenizer.train(&mut trainer, texts).map(|_| ());
    if let Some(e) = failure.lock().unwrap().take() {
        return Err(e);
    }
    trained.map_err(|e| anyhow::anyhow!("training the BPE tokenizer failed: {e}"))?;
    let used = *used.lock().unwrap();
    Ok((tokenizer, used))
}

/// Whether chunked encoding equals whole-text encoding for this tokenizer (true for a
/// byte-level pre-tokenizer with the GPT-2 regex and no normalizer).
pub fn can_chunk(tokenizer: &Tokenizer) -> bool {
    let Ok(json) = tokenizer.to_string(false) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) else {
        return false;
    };
    let pt = &v["pre_tokenizer"];
    pt["type"] == "ByteLevel" && pt["use_regex"] != false && v["normalizer"].is_null()
}

fn to_u16(id: u32) -> Result<u16> {
    u16::try_from(id).map_err(|_| {
        anyhow::anyhow!("token id {id} does not fit the uint16 shard format (at most 65,535)")
    })
}

/// Encodes the stream's pieces on all cores (rayon's pool) while a second thread reads
/// ahead, and hands the tokens to `sink` in stream order, `<|endoftext|>` (when the
/// tokenizer has it) at each document break. Returns the number of tokens.
pub fn encode_stream(
    tokenizer: &Tokenizer,
    stream: TextStream,
    names: &[String],
    sink: &mut dyn FnMut(&[u16]) -> Result<()>,
) -> Result<u64> {
    let eot = tokenizer.token_to_id(EOT).map(to_u16).transpose()?;
    let threads = rayon::current_num_threads().max(1);
    // A batch keeps every core busy with a few pieces; a couple of batches are in flight.
    let batch_pieces = (threads * 4).max(8);
    let batch_bytes = (batch_pieces * PIECE.target).min(256 << 20);
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel::<Result<Vec<Item>>>(2);
        s.spawn(move || {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for item in stream {
                match item {
                    Ok(item) => {
                        if let Item::Text(t, _) = &item {
                            bytes += t.len();
                        }
                        batch.push(item);
                        if batch.len() >= batch_pieces || bytes >= batch_bytes {
                            bytes = 0;
                            if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch));
            }
        });
        let mut total = 0u64;
        let result = (|| {
            for batch in &rx {
                let encoded: Vec<Result<Vec<u16>>> = batch?
                    .par_iter()
                    .map(|item| match item {
                        Item::DocBreak => Ok(eot.into_iter().collect()),
                        Item::Text(t, src) => {
                            let enc = tokenizer.encode(t.as_str(), false).map_err(|e| {
                                anyhow::anyhow!("{}: tokenizing failed: {e}", names[*src])
                            })?;
                            enc.get_ids().iter().map(|&id| to_u16(id)).collect()
                        }
                    })
                    .collect();
                for toks in encoded {
                    let toks = toks?;
                    total += toks.len() as u64;
                    sink(&toks).context("writing shards")?;
                }
            }
            Ok(total)
        })();
        drop(rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::prepare::input::{cut_text, Format};

    #[test]
    fn pieces_cut_at_line_starts_or_single_spaces_encode_to_the_whole_texts_tokens() {
        let line = "Long line: it's 12 words, naïve café — 東京!  two  spaces\tand tabs; ";
        let text = (line.repeat(40) + "\nnext line\n  indented\n\n").repeat(3);
        let text: &'static str = Box::leak(text.into_boxed_str());
        let src = Source::bytes("t", text.as_bytes(), Format::Text);
        let (tok, used) = train_bpe(&[src], "text", 400, 1 << 20).unwrap();
        assert_eq!(used, text.len() as u64);
        assert!(can_chunk(&tok));
        // A text with line starts, and a long line with none (cut before single spaces).
        for text in [text, &line.repeat(40)] {
            let whole = tok.encode(text, false).unwrap().get_ids().to_vec();
            for target in [7, 50, 333] {
                let cut = Cutting {
                    target,
                    hard_max: 1 << 20,
                };
                let pieces = cut_text(text, cut);
                assert!(pieces.len() > 2, "{target}");
                let mut ids = Vec::new();
                for p in pieces {
                    ids.extend_from_slice(tok.encode(p, false).unwrap().get_ids());
                }
                assert_eq!(ids, whole, "target {target}");
            }
        }
    }
}
