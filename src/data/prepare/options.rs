//! What `data prepare` is asked for: the tokenizer (`--tokenizer FILE.json` or
//! `train:VOCAB`), the validation split, and the options checked before any work starts.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::dataset::check_replaceable;
use super::{DATASET_FILE, DEFAULT_TRAIN_SAMPLE_MB};

/// Which tokenizer to use: `FILE.json` or `train:VOCAB`.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSpec {
    File(PathBuf),
    Train { vocab_size: usize },
}

impl std::str::FromStr for TokenizerSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(v) = s.strip_prefix("train:") {
            let vocab_size: usize = v
                .parse()
                .with_context(|| format!("--tokenizer {s}: `{v}` is not a vocabulary size"))?;
            // uint16 shards hold ids 0..=65,535: a vocabulary of up to 65,536 tokens.
            if !(257..=65_536).contains(&vocab_size) {
                bail!("--tokenizer {s}: vocabulary must be between 257 and 65,536 (uint16 shards)");
            }
            return Ok(TokenizerSpec::Train { vocab_size });
        }
        let p = PathBuf::from(s);
        if !p.is_file() {
            bail!("--tokenizer {s}: no such file (expected a tokenizer.json or train:VOCAB)");
        }
        Ok(TokenizerSpec::File(p))
    }
}

/// How the validation split is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValSplit {
    /// The last fraction of the token stream.
    LastFraction(f64),
    /// The first N tokens of the stream.
    FirstTokens(usize),
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub tokenizer: TokenizerSpec,
    pub out: PathBuf,
    pub val: ValSplit,
    pub shard_tokens: usize,
    /// The JSON field holding a document's text in `.jsonl` inputs.
    pub text_field: String,
    /// Train a BPE on at most this many MB (10^6 bytes) of text.
    pub train_sample_mb: u64,
    /// Replace an existing dataset in `out`.
    pub force: bool,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Print one line per phase (when not showing a bar).
    pub verbose: bool,
}

impl PrepareOptions {
    pub fn new(tokenizer: TokenizerSpec, out: PathBuf) -> Self {
        PrepareOptions {
            tokenizer,
            out,
            val: ValSplit::LastFraction(0.1),
            shard_tokens: 100_000_000,
            text_field: "text".into(),
            train_sample_mb: DEFAULT_TRAIN_SAMPLE_MB,
            force: false,
            progress: false,
            verbose: false,
        }
    }

    /// `--train-sample-mb` in bytes; a sample larger than any input means all of it.
    pub fn sample_bytes(&self) -> u64 {
        self.train_sample_mb.saturating_mul(1_000_000)
    }

    pub(super) fn check(&self) -> Result<()> {
        match self.val {
            ValSplit::LastFraction(f) if !(f > 0.0 && f < 1.0) => {
                bail!("--val-fraction {f}: expected a number between 0 and 1 (exclusive)")
            }
            ValSplit::FirstTokens(0) => bail!("--val-tokens must be at least 1"),
            _ => {}
        }
        if self.shard_tokens == 0 {
            bail!("--shard-tokens must be at least 1");
        }
        if self.shard_tokens > i32::MAX as usize {
            bail!(
                "--shard-tokens {}: a shard holds at most {} tokens",
                self.shard_tokens,
                i32::MAX
            );
        }
        if self.train_sample_mb == 0 {
            bail!("--train-sample-mb must be at least 1");
        }
        let out = &self.out;
        if out.exists() && !out.is_dir() {
            bail!("--out {}: exists and is not a folder", out.display());
        }
        let empty = !out.is_dir()
            || std::fs::read_dir(out)
                .with_context(|| format!("--out {}: cannot read the folder", out.display()))?
                .next()
                .is_none();
        if empty {
            return Ok(());
        }
        if !self.force {
            if out.join(DATASET_FILE).exists() {
                bail!(
                    "{} already holds a dataset; pass --force to replace it",
                    out.display()
                );
            }
            bail!(
                "--out {}: the folder is not empty and holds no stacklab dataset ({DATASET_FILE}); give a new or empty folder",
                out.display()
            );
        }
        check_replaceable(out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_spec_parses_and_refuses() {
        assert_eq!(
            "train:512".parse::<TokenizerSpec>().unwrap(),
            TokenizerSpec::Train { vocab_size: 512 }
        );
        // 65,536 tokens have ids 0..=65,535: the most a uint16 shard holds.
        assert_eq!(
            "train:65536".parse::<TokenizerSpec>().unwrap(),
            TokenizerSpec::Train { vocab_size: 65_536 }
        );
        let e = "train:65537"
            .parse::<TokenizerSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 257 and 65,536"), "{e}");
        let e = "nope.json"
            .parse::<TokenizerSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.json: no such file"), "{e}");
    }

    #[test]
    fn a_sample_of_any_size_is_a_byte_count() {
        let mut o = PrepareOptions::new(TokenizerSpec::Train { vocab_size: 300 }, "o".into());
        o.train_sample_mb = 20;
        assert_eq!(o.sample_bytes(), 20_000_000);
        // 18,446,744,073,710 MB wrapped to a sample of 448,384 bytes before.
        o.train_sample_mb = 18_446_744_073_710;
        assert_eq!(o.sample_bytes(), u64::MAX);
    }
}
