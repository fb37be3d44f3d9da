//! The seed's batch semantics: a batch of B sequences of T tokens takes the next B·T+1
//! tokens, inputs are all but the last, targets all but the first; the position advances by
//! B·T; when a batch would not fit in the rest of a shard, the loader moves to the start of
//! the next shard (wrapping to the first after the last, for training). Validation always
//! starts at the beginning.
//!
//! The seed checks "does the next batch fit" right after each read; this loader checks right
//! before each read, with the size of the batch being read. For batches of one size the two
//! are the same; a smaller last batch (evaluation) then reads the tokens it should.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::shard::{read_header, Shard};

/// Where a loader stands, saved in checkpoints so a resumed run reads the same data. The
/// shard's file name and size are kept to notice shards that changed underneath a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LoaderState {
    pub shard: usize,
    pub position: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shard_file: String,
    #[serde(default)]
    pub shard_tokens: usize,
}

/// Tokens `[start, end)` of one shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    pub file: PathBuf,
    pub start: usize,
    pub end: usize,
}

/// One batch as flat token ids: `inputs` and `targets` each hold B·T values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub b: usize,
    pub t: usize,
    pub inputs: Vec<i64>,
    pub targets: Vec<i64>,
}

impl Batch {
    /// The largest token id, to check against a model's vocabulary before embedding.
    pub fn max_token(&self) -> i64 {
        self.inputs
            .iter()
            .chain(&self.targets)
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Sequences `first..first + n` of the batch (a micro-batch of a step's window).
    pub fn rows(&self, first: usize, n: usize) -> Batch {
        let r = first * self.t..(first + n) * self.t;
        Batch {
            b: n,
            t: self.t,
            inputs: self.inputs[r.clone()].to_vec(),
            targets: self.targets[r].to_vec(),
        }
    }

    pub fn tensors(&self, device: Device) -> (Tensor, Tensor) {
        let shape = [self.b as i64, self.t as i64];
        let x = Tensor::from_slice(&self.inputs)
            .view(shape)
            .to_device(device);
        let y = Tensor::from_slice(&self.targets)
            .view(shape)
            .to_device(device);
        (x, y)
    }
}

pub struct ShardLoader {
    files: Vec<PathBuf>,
    /// Tokens in each shard, from the headers.
    lengths: Vec<usize>,
    b: usize,
    t: usize,
    /// Go back to the first shard after the last (training) or refuse (evaluation).
    wrap: bool,
    shard: usize,
    position: usize,
    current: Shard,
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl ShardLoader {
    /// Opens a loader over `files` for batches of `b` x `t`; every shard must hold at least
    /// one batch (b·t + 1 tokens), as the seed asserts.
    pub fn new(files: Vec<PathBuf>, b: usize, t: usize) -> Result<ShardLoader> {
        if files.is_empty() {
            bail!("no shard files given");
        }
        if b == 0 || t == 0 {
            bail!("batches of {b} x {t} tokens are empty");
        }
        let need = b * t + 1;
        let mut lengths = Vec::with_capacity(files.len());
        for f in &files {
            let n = read_header(f)?;
            lengths.push(n);
            if n < need {
                bail!(
                    "shard {} holds {n} tokens, fewer than one batch of {b} x {t} + 1 = {need}",
                    f.display()
                );
            }
        }
        let current = Shard::open(&files[0])?;
        Ok(ShardLoader {
            files,
            lengths,
            b,
            t,
            wrap: true,
            shard: 0,
            position: 0,
            current,
        })
    }

    pub fn from_glob(pattern: &str, b: usize, t: usize) -> Result<ShardLoader> {
        Self::new(super::expand_glob(pattern)?, b, t)
    }

    /// A loader that refuses to go past its last shard instead of wrapping to the first
    /// (evaluation must not score a token twice).
    pub fn without_wrapping(mut self) -> ShardLoader {
        self.wrap = false;
        self
    }

    pub fn set_wrapping(&mut self, wrap: bool) {
        self.wrap = wrap;
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn seq_len(&self) -> usize {
        self.t
    }

    pub fn batch_size(&self) -> usize {
        self.b
    }

    /// Whether `sequences` sequences can be read from the start without wrapping, as
    /// [`next_sequences`](Self::next_sequences) reads them (what evaluation reads).
    pub fn fits_from_start(&self, sequences: usize) -> bool {
        sequences <= self.max_sequences_from_start()
    }

    /// The most sequences [`next_sequences`](Self::next_sequences) reads from the start
    /// without wrapping: `(len - 1) / T` in every shard, whatever the batch size.
    pub fn max_sequences_from_start(&self) -> usize {
        self.lengths.iter().map(|len| (len - 1) / self.t).sum()
    }

    /// Where the first `sequences` sequences from the start lie: per shard read, the file
    /// and the half-open token range `[start, end)` their windows cover (targets included).
    /// Two reads whose spans overlap score or fit on some of the same tokens.
    pub fn spans_from_start(&self, sequences: usize) -> Vec<TokenSpan> {
        let mut out: Vec<TokenSpan> = Vec::new();
        let mut left = sequences;
        for (file, &len) in self.files.iter().zip(&self.lengths) {
            if left == 0 {
                break;
            }
            let n = left.min((len - 1) / self.t);
            if n > 0 {
                out.push(TokenSpan {
                    file: file.clone(),
                    start: 0,
                    end: n * self.t + 1,
                });
            }
            left -= n;
        }
        out
    }

    pub fn state(&self) -> LoaderState {
        LoaderState {
            shard: self.shard,
            position: self.position,
            shard_file: file_name(&self.files[self.shard]),
            shard_tokens: self.current.len(),
        }
    }

    /// Moves to a saved position (a resumed run), checking the shard is the one it was.
    pub fn restore(&mut self, state: &LoaderState) -> Result<()> {
        if state.shard >= self.files.len() {
            bail!(
                "saved data position is in shard #{} but only {} shard(s) match now",
                state.shard,
                self.files.len()
            );
        }
        let path = &self.files[state.shard];
        if !state.shard_file.is_empty() && state.shard_file != file_name(path) {
            bail!(
                "saved data position is in shard {} but shard #{} is now {}: the data changed",
                state.shard_file,
                state.shard,
                path.display()
            );
        }
        if state.shard != self.shard {
            self.current = Shard::open(path)?;
        }
        if state.shard_tokens != 0 && state.shard_tokens != self.current.len() {
            bail!(
                "shard {} held {} tokens when the position was saved and holds {} now: the data changed",
                path.display(),
                state.shard_tokens,
                self.current.len()
            );
        }
        if state.position > self.current.len() {
            bail!(
                "saved data position {} is past the end of shard {} ({} tokens)",
                state.position,
                path.display(),
                self.current.len()
            );
        }
        self.shard = state.shard;
        self.position = state.position;
        Ok(())
    }

    /// Back to the first token of the first shard (what validation does every time).
    pub fn reset(&mut self) -> Result<()> {
        self.restore(&LoaderState::default())
    }

    fn advance(&mut self) -> Result<()> {
        if self.shard + 1 == self.files.len() && !self.wrap {
            bail!(
                "the shards ({}) hold fewer tokens than asked for",
                self.files
                    .iter()
                    .map(|f| file_name(f))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let next = (self.shard + 1) % self.files.len();
        if next != self.shard {
            self.current = Shard::open(&self.files[next])?;
        }
        self.shard = next;
        self.position = 0;
        Ok(())
    }

    /// The next batch, advancing exactly as the seed's loader does.
    pub fn next_batch(&mut self) -> Result<Batch> {
        self.next_batch_of(self.b)
    }

    /// The next batch of `b` sequences (at most the loader's batch size; evaluation uses a
    /// smaller last batch to cover exactly the tokens asked for).
    pub fn next_batch_of(&mut self, b: usize) -> Result<Batch> {
        if b == 0 || b > self.b {
            bail!(
                "a batch of {b} sequences from a loader built for {}",
                self.b
            );
        }
        let bt = b * self.t;
        if self.position + bt + 1 > self.current.len() {
            self.advance()?;
        }
        let buf = self.current.window_i64(self.position, bt + 1);
        self.position += bt;
        Ok(Batch {
            b,
            t: self.t,
            inputs: buf[..bt].to_vec(),
            targets: buf[1..].to_vec(),
        })
    }

    /// The next `n` sequences (at most the loader's batch size) as one batch, read one
    /// sequence at a time: each takes the next T+1 tokens and advances by T, and a sequence
    /// that does not fit in the rest of a shard starts the next shard. Evaluation reads
    /// this way, so which tokens it scores depends on T and the count alone, never on the
    /// batch size. Inside a shard it reads exactly what [`next_batch_of`](Self::next_batch_of) reads.
    pub fn next_sequences(&mut self, n: usize) -> Result<Batch> {
        if n == 0 || n > self.b {
            bail!(
                "a batch of {n} sequences from a loader built for {}",
                self.b
            );
        }
        let t = self.t;
        let mut inputs = Vec::with_capacity(n * t);
        let mut targets = Vec::with_capacity(n * t);
        let mut done = 0;
        while done < n {
            if self.position + t + 1 > self.current.len() {
                self.advance()?;
            }
            // As many of the remaining sequences as this shard still holds, in one window.
            let here = ((self.current.len() - self.position - 1) / t).min(n - done);
            let buf = self.current.window_i64(self.position, here * t + 1);
            inputs.extend_from_slice(&buf[..here * t]);
            targets.extend_from_slice(&buf[1..]);
            self.position += here * t;
            done += here;
        }
        Ok(Batch {
            b: n,
            t,
            inputs,
            targets,
        })
    }

    /// The batch after the current one, without moving (COCONUT's `seed` mode scores
    /// latents against it).
    pub fn peek_batch(&mut self) -> Result<Batch> {
        let saved = self.state();
        let batch = self.next_batch();
        self.restore(&saved)?;
        batch
    }
}

#[cfg(test)]
mod tests;
