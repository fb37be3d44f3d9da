//! The seed's batch semantics: a batch of B sequences of T tokens takes the next B·T+1
//! tokens, inputs are all but the last, targets all but the first; the position advances by
//! B·T; when the next batch would not fit, the loader moves to the start of the next shard
//! (wrapping to the first after the last). Validation always starts at the beginning.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::shard::{read_header, Shard};

/// Where a loader stands, saved in checkpoints so a resumed run reads the same data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LoaderState {
    pub shard: usize,
    pub position: usize,
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
    b: usize,
    t: usize,
    state: LoaderState,
    current: Shard,
}

impl ShardLoader {
    /// Opens a loader over `files` for batches of `b` x `t`; every shard must hold at least
    /// one batch (b·t + 1 tokens), as the seed asserts.
    pub fn new(files: Vec<PathBuf>, b: usize, t: usize) -> Result<ShardLoader> {
        if files.is_empty() {
            bail!("no shard files given");
        }
        let need = b * t + 1;
        for f in &files {
            let n = read_header(f)?;
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
            b,
            t,
            state: LoaderState::default(),
            current,
        })
    }

    pub fn from_glob(pattern: &str, b: usize, t: usize) -> Result<ShardLoader> {
        Self::new(super::expand_glob(pattern)?, b, t)
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

    /// Tokens in all shards together.
    pub fn total_tokens(&self) -> Result<usize> {
        self.files.iter().map(|f| read_header(f)).sum()
    }

    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Moves to a saved position (a resumed run).
    pub fn restore(&mut self, state: LoaderState) -> Result<()> {
        if state.shard >= self.files.len() {
            bail!(
                "saved data position is in shard #{} but only {} shard(s) match now",
                state.shard,
                self.files.len()
            );
        }
        if state.shard != self.state.shard {
            self.current = Shard::open(&self.files[state.shard])?;
        }
        if state.position + self.b * self.t + 1 > self.current.len() {
            bail!(
                "saved data position {} does not fit shard {} ({} tokens)",
                state.position,
                self.files[state.shard].display(),
                self.current.len()
            );
        }
        self.state = state;
        Ok(())
    }

    /// Back to the first token of the first shard (what validation does every time).
    pub fn reset(&mut self) -> Result<()> {
        self.restore(LoaderState::default())
    }

    fn advance(&mut self) -> Result<()> {
        let next = (self.state.shard + 1) % self.files.len();
        if next != self.state.shard {
            self.current = Shard::open(&self.files[next])?;
        }
        self.state = LoaderState {
            shard: next,
            position: 0,
        };
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
        let buf = self.current.window_i64(self.state.position, bt + 1);
        let batch = Batch {
            b,
            t: self.t,
            inputs: buf[..bt].to_vec(),
            targets: buf[1..].to_vec(),
        };
        self.state.position += bt;
        if self.state.position + bt + 1 > self.current.len() {
            self.advance()?;
        }
        Ok(batch)
    }

    /// The batch after the current one, without moving (COCONUT's `seed` mode scores
    /// latents against it).
    pub fn peek_batch(&mut self) -> Result<Batch> {
        let saved = self.state;
        let batch = self.next_batch();
        self.restore(saved)?;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shard;

    /// Two hand-built shards: shard A holds 0..23, shard B holds 100..110.
    fn two_shards(dir: &std::path::Path) -> Vec<PathBuf> {
        let a: Vec<u16> = (0..23).collect();
        let b: Vec<u16> = (100..110).collect();
        let pa = dir.join("t_000000.bin");
        let pb = dir.join("t_000001.bin");
        shard::write(&pa, &a).unwrap();
        shard::write(&pb, &b).unwrap();
        vec![pa, pb]
    }

    #[test]
    fn windows_and_rollover_match_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let files = two_shards(dir.path());
        // B=2, T=3: each batch takes 7 tokens and advances by 6.
        let mut l = ShardLoader::new(files, 2, 3).unwrap();
        let b1 = l.next_batch().unwrap();
        assert_eq!(b1.inputs, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(b1.targets, vec![1, 2, 3, 4, 5, 6]);
        let b2 = l.next_batch().unwrap();
        assert_eq!(b2.inputs, vec![6, 7, 8, 9, 10, 11]);
        assert_eq!(b2.targets, vec![7, 8, 9, 10, 11, 12]);
        // Position 12: 12 + 7 = 19 <= 23 still fits.
        let b3 = l.next_batch().unwrap();
        assert_eq!(b3.inputs, vec![12, 13, 14, 15, 16, 17]);
        assert_eq!(b3.targets, vec![13, 14, 15, 16, 17, 18]);
        // Position 18: 18 + 7 = 25 > 23, so the loader moved to shard B (tokens 18..23 unused).
        assert_eq!(
            l.state(),
            LoaderState {
                shard: 1,
                position: 0
            }
        );
        let b4 = l.next_batch().unwrap();
        assert_eq!(b4.inputs, vec![100, 101, 102, 103, 104, 105]);
        assert_eq!(b4.targets, vec![101, 102, 103, 104, 105, 106]);
        // Shard B has 10 tokens: 6 + 7 > 10, wrap around to shard A.
        assert_eq!(
            l.state(),
            LoaderState {
                shard: 0,
                position: 0
            }
        );
        assert_eq!(l.next_batch().unwrap(), b1);
    }

    #[test]
    fn peek_does_not_move_and_restore_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let files = two_shards(dir.path());
        let mut l = ShardLoader::new(files.clone(), 2, 3).unwrap();
        l.next_batch().unwrap();
        let peeked = l.peek_batch().unwrap();
        let state = l.state();
        assert_eq!(l.next_batch().unwrap(), peeked);
        let mut other = ShardLoader::new(files, 2, 3).unwrap();
        other.restore(state).unwrap();
        assert_eq!(other.next_batch().unwrap(), peeked);
        other.reset().unwrap();
        assert_eq!(other.next_batch().unwrap().inputs, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_shard_smaller_than_one_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = two_shards(dir.path());
        let e = ShardLoader::new(files, 3, 4).err().unwrap().to_string();
        assert!(
            e.contains("t_000001.bin holds 10 tokens, fewer than one batch of 3 x 4 + 1 = 13"),
            "{e}"
        );
    }
}
