//! The seed's training data exactly as its ranks read it.
//!
//! The seed ran 8 data-parallel ranks, each with its own `DistributedDataLoader` over the
//! same train shards: rank `r` starts a shard at `r·B·T`, reads `B·T + 1` tokens per
//! micro-batch, advances by `ranks·B·T`, and right after each read moves to the next shard
//! when its *own* `position + ranks·B·T + 1` passes the shard's end. Ranks therefore can
//! move to the next shard at different steps and stay offset. [`TrainStream`] emulates
//! that on one device: a step's micro-batches are rank 0's, then rank 1's, ... (rank-major),
//! each rank reading `global_batch / (ranks · micro_batch)` of them.
//!
//! The shard list is the sorted glob, shuffled as the seed did (`random.seed(seed);
//! random.shuffle(files)`) unless `data.shard_order = "sorted"`. The seed read its very
//! first batch before the shuffle took effect (from the first sorted shard); that quirk is
//! not reproduced: every batch comes from the shuffled order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::loader::{Batch, LoaderState};
use super::shard::{read_header, Shard};
use crate::config::ShardOrder;

/// Where every rank stands and the shard order it reads, saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TrainStreamState {
    /// The train shards' file names in the order they are read.
    #[serde(default)]
    pub shard_order: Vec<String>,
    /// Each rank's shard (an index into `shard_order`) and next read position.
    #[serde(default)]
    pub ranks: Vec<LoaderState>,
}

pub struct TrainStream {
    files: Vec<PathBuf>,
    b: usize,
    t: usize,
    per_rank: usize,
    cursors: Vec<LoaderState>,
    open: HashMap<usize, Shard>,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The shards in the order a run with `seed` reads them.
pub fn ordered_shards(mut sorted: Vec<PathBuf>, order: ShardOrder, seed: i64) -> Vec<PathBuf> {
    sorted.sort();
    match order {
        ShardOrder::Sorted => sorted,
        ShardOrder::Seed => super::pyrandom::shuffled_indices(sorted.len(), seed)
            .into_iter()
            .map(|i| sorted[i].clone())
            .collect(),
    }
}

impl TrainStream {
    /// A stream over `files` (already in read order) for `ranks` ranks reading `per_rank`
    /// micro-batches of `b` x `t` per step. Every shard must hold `ranks·b·t + 1` tokens,
    /// as the seed asserts.
    pub fn new(
        files: Vec<PathBuf>,
        b: usize,
        t: usize,
        ranks: usize,
        per_rank: usize,
    ) -> Result<TrainStream> {
        if files.is_empty() {
            bail!("no train shard files given");
        }
        if b == 0 || t == 0 || ranks == 0 || per_rank == 0 {
            bail!("an empty batch: {ranks} rank(s) x {per_rank} x {b} x {t} tokens");
        }
        let need = ranks * b * t + 1;
        for f in &files {
            let n = read_header(f)?;
            if n < need {
                bail!(
                    "shard {} holds {n} tokens, fewer than batch.ranks x batch.micro_batch x model.seq_len + 1 = {ranks} x {b} x {t} + 1 = {need} (the seed's minimum)",
                    f.display()
                );
            }
        }
        let cursors = (0..ranks)
            .map(|r| LoaderState {
                shard: 0,
                position: r * b * t,
                ..Default::default()
            })
            .collect();
        let mut s = TrainStream {
            files,
            b,
            t,
            per_rank,
            cursors,
            open: HashMap::new(),
        };
        s.refresh_names()?;
        Ok(s)
    }

    pub fn ranks(&self) -> usize {
        self.cursors.len()
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn shard(&mut self, i: usize) -> Result<&Shard> {
        if !self.open.contains_key(&i) {
            let s = Shard::open(&self.files[i])?;
            self.open.insert(i, s);
            // Ranks are at most one shard apart in practice; keep only the shards in use.
            let used: Vec<usize> = self.cursors.iter().map(|c| c.shard).collect();
            self.open.retain(|k, _| *k == i || used.contains(k));
        }
        Ok(&self.open[&i])
    }

    fn refresh_names(&mut self) -> Result<()> {
        for r in 0..self.cursors.len() {
            let i = self.cursors[r].shard;
            let len = self.shard(i)?.len();
            let c = &mut self.cursors[r];
            c.shard_file = file_name(&self.files[i]);
            c.shard_tokens = len;
        }
        Ok(())
    }

    /// One read of rank `r` from `cursor`, with the seed's post-read rollover check.
    fn read_at(&mut self, r: usize, cursor: &mut LoaderState) -> Result<Batch> {
        let ranks = self.cursors.len();
        let bt = self.b * self.t;
        let buf = self
            .shard(cursor.shard)?
            .window_i64(cursor.position, bt + 1);
        cursor.position += bt * ranks;
        let len = self.shard(cursor.shard)?.len();
        if cursor.position + bt * ranks + 1 > len {
            cursor.shard = (cursor.shard + 1) % self.files.len();
            cursor.position = r * bt;
            let len = self.shard(cursor.shard)?.len();
            cursor.shard_file = file_name(&self.files[cursor.shard]);
            cursor.shard_tokens = len;
        }
        Ok(Batch {
            b: self.b,
            t: self.t,
            inputs: buf[..bt].to_vec(),
            targets: buf[1..].to_vec(),
        })
    }

    /// The next micro-batch of rank `r`.
    pub fn next_of_rank(&mut self, r: usize) -> Result<Batch> {
        let mut c = self.cursors[r].clone();
        let b = self.read_at(r, &mut c)?;
        self.cursors[r] = c;
        Ok(b)
    }

    /// What rank `r` reads next, without moving it.
    pub fn peek_rank(&mut self, r: usize) -> Result<Batch> {
        let mut c = self.cursors[r].clone();
        self.read_at(r, &mut c)
    }

    /// A step's micro-batches, rank-major: rank 0's `per_rank`, then rank 1's, ...
    pub fn next_step(&mut self) -> Result<Vec<Batch>> {
        let mut out = Vec::with_capacity(self.ranks() * self.per_rank);
        for r in 0..self.ranks() {
            for _ in 0..self.per_rank {
                out.push(self.next_of_rank(r)?);
            }
        }
        Ok(out)
    }

    /// For each of a step's micro-batches (as `next_step` returned them), the batch the seed
    /// had loaded next when it ran that micro-batch's latent pass: the same rank's next read.
    pub fn seed_next_batches(&mut self, step: &[Batch]) -> Result<Vec<Batch>> {
        let mut out = Vec::with_capacity(step.len());
        for r in 0..self.ranks() {
            for a in 0..self.per_rank {
                out.push(if a + 1 < self.per_rank {
                    step[r * self.per_rank + a + 1].clone()
                } else {
                    self.peek_rank(r)?
                });
            }
        }
        Ok(out)
    }

    pub fn state(&self) -> TrainStreamState {
        TrainStreamState {
            shard_order: self.files.iter().map(|f| file_name(f)).collect(),
            ranks: self.cursors.clone(),
        }
    }

    /// Moves every rank to a saved position, after checking the shards are the ones the
    /// run read (same order, same sizes).
    pub fn restore(&mut self, state: &TrainStreamState) -> Result<()> {
        let now = self.state();
        if !state.shard_order.is_empty() && state.shard_order != now.shard_order {
            bail!(
                "the train shards changed since the checkpoint: it read [{}], the glob and data.shard_order now give [{}]",
                state.shard_order.join(", "),
                now.shard_order.join(", ")
            );
        }
        if state.ranks.len() != self.cursors.len() {
            bail!(
                "the checkpoint saved {} rank position(s) but batch.ranks = {}",
                state.ranks.len(),
                self.cursors.len()
            );
        }
        for (r, saved) in state.ranks.iter().enumerate() {
            if saved.shard >= self.files.len() {
                bail!(
                    "rank {r}'s saved position is in shard #{} but only {} shard(s) match now",
                    saved.shard,
                    self.files.len()
                );
            }
            let len = self.shard(saved.shard)?.len();
            if saved.shard_tokens != 0 && saved.shard_tokens != len {
                bail!(
                    "shard {} held {} tokens when rank {r}'s position was saved and holds {len} now: the data changed",
                    self.files[saved.shard].display(),
                    saved.shard_tokens
                );
            }
            if saved.position + self.b * self.t + 1 > len {
                bail!(
                    "rank {r}'s saved position {} is past the end of shard {} ({len} tokens)",
                    saved.position,
                    self.files[saved.shard].display()
                );
            }
        }
        self.cursors = state.ranks.clone();
        self.refresh_names()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shard;

    #[test]
    fn ranks_read_interleaved_windows_and_roll_over_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        // Shard A: 0..30, shard B: 100..130. B=1, T=3, 2 ranks: a read takes 4 tokens,
        // a rank advances by 6, and moves on when position + 7 > 30.
        let a: Vec<u16> = (0..30).collect();
        let b: Vec<u16> = (100..130).collect();
        let (pa, pb) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        shard::write(&pa, &a).unwrap();
        shard::write(&pb, &b).unwrap();
        let mut s = TrainStream::new(vec![pa.clone(), pb.clone()], 1, 3, 2, 1).unwrap();
        let firsts = |s: &mut TrainStream| -> Vec<i64> {
            s.next_step().unwrap().iter().map(|b| b.inputs[0]).collect()
        };
        assert_eq!(firsts(&mut s), vec![0, 3]);
        assert_eq!(firsts(&mut s), vec![6, 9]);
        assert_eq!(firsts(&mut s), vec![12, 15]);
        // Rank 0 at 18: 18 + 7 <= 30 stays; rank 1 at 21: 21 + 7 <= 30 stays.
        assert_eq!(firsts(&mut s), vec![18, 21]);
        // Rank 0 now at 24 (24 + 7 > 30: moved to B at 0); rank 1 at 27 likewise, at 3.
        assert_eq!(firsts(&mut s), vec![100, 103]);
        let saved = s.state();
        assert_eq!(saved.shard_order, vec!["a.bin", "b.bin"]);
        let next = firsts(&mut s);
        let mut other = TrainStream::new(vec![pa, pb], 1, 3, 2, 1).unwrap();
        other.restore(&saved).unwrap();
        assert_eq!(firsts(&mut other), next);
    }

    #[test]
    fn shard_order_is_the_seeds_shuffle() {
        let files: Vec<PathBuf> = (0..10)
            .map(|i| PathBuf::from(format!("s_{i:02}.bin")))
            .collect();
        let sorted = ordered_shards(files.clone(), ShardOrder::Sorted, 5);
        assert_eq!(sorted, files);
        let a = ordered_shards(files.clone(), ShardOrder::Seed, 0);
        let b = ordered_shards(files.clone(), ShardOrder::Seed, 1234);
        assert_ne!(a, b);
        assert_ne!(a, files);
    }
}
