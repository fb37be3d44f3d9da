//! The corpus shipped inside stacklab (the complete works of Shakespeare, see
//! `data/shakespeare.SOURCE.md`), prepared the first time it is needed into the user's data
//! dir with a byte-level BPE of vocabulary 4096, then reused.

use std::path::PathBuf;

use anyhow::Result;

use super::prepare::{self, Dataset, PrepareOptions, TokenizerSpec};

pub const CORPUS_GZ: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/shakespeare.txt.gz"
));
pub const VOCAB_SIZE: usize = 4096;
pub const VAL_FRACTION: f64 = 0.1;
/// Bump when the preparation changes, so old preparations are not mixed with new ones.
const LAYOUT: &str = "shakespeare-bpe4096-v1";

pub fn dir() -> PathBuf {
    crate::paths::data_dir().join("embedded").join(LAYOUT)
}

/// The prepared embedded dataset if it exists already (no work done).
pub fn prepared() -> Option<Dataset> {
    Dataset::open(&dir()).ok()
}

/// The prepared embedded dataset, preparing it first if needed (a few seconds, once).
pub fn ensure_prepared() -> Result<Dataset> {
    if let Some(ds) = prepared() {
        return Ok(ds);
    }
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    eprintln!(
        "preparing the embedded corpus (Shakespeare, BPE vocabulary {VOCAB_SIZE}) in {} ...",
        dir().display()
    );
    let source = prepare::Source::bytes(
        "shakespeare.txt.gz (embedded)",
        CORPUS_GZ,
        prepare::Format::Text,
    );
    let mut opts = PrepareOptions::new(
        TokenizerSpec::Train {
            vocab_size: VOCAB_SIZE,
        },
        dir(),
    );
    // The tail 10% is val, and the BPE sees the whole corpus (5.4 MB, under the sample
    // bound): the same shards and tokenizer as before preparation streamed.
    opts.val = prepare::ValSplit::LastFraction(VAL_FRACTION);
    opts.progress = interactive;
    opts.force = false;
    match prepare::prepare(&[source], &opts) {
        Ok(ds) => Ok(ds),
        // Another process may have prepared it while this one worked.
        Err(e) => prepared().ok_or(e),
    }
}
