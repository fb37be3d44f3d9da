//! Unit tests of the loader: the seed's windows and shard rollover, peeking and resuming,
//! a smaller last batch without wrapping, capacity from the start, evaluation's
//! batch-independent sequences, micro-batch rows.

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
    // Position 18: 18 + 7 = 25 > 23, so the next batch comes from shard B (tokens 18..23 unused).
    let b4 = l.next_batch().unwrap();
    assert_eq!(b4.inputs, vec![100, 101, 102, 103, 104, 105]);
    assert_eq!(b4.targets, vec![101, 102, 103, 104, 105, 106]);
    assert_eq!((l.state().shard, l.state().position), (1, 6));
    // Shard B has 10 tokens: 6 + 7 > 10, wrap around to shard A.
    assert_eq!(l.next_batch().unwrap(), b1);
    assert_eq!(l.state().shard_file, "t_000000.bin");
    assert_eq!(l.state().shard_tokens, 23);
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
    other.restore(&state).unwrap();
    assert_eq!(other.next_batch().unwrap(), peeked);
    other.reset().unwrap();
    assert_eq!(other.next_batch().unwrap().inputs, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_smaller_last_batch_reads_the_next_tokens_and_evaluation_never_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let files = two_shards(dir.path());
    let mut l = ShardLoader::new(files.clone(), 3, 2)
        .unwrap()
        .without_wrapping();
    // 3 x 2 + 1 = 7 tokens a batch: positions 0, 6, 12 in shard A, then a batch of 2
    // at 18 (18 + 5 = 23 fits exactly).
    for start in [0, 6, 12] {
        assert_eq!(l.next_batch().unwrap().inputs[0], start);
    }
    let last = l.next_batch_of(2).unwrap();
    assert_eq!(last.inputs, vec![18, 19, 20, 21]);
    assert_eq!(last.targets, vec![19, 20, 21, 22]);
    // Shard B: one batch at 0; then it is used up, and evaluation refuses to wrap.
    assert_eq!(l.next_batch().unwrap().inputs[0], 100);
    let e = l.next_batch().unwrap_err().to_string();
    assert!(e.contains("hold fewer tokens than asked for"), "{e}");
    // A saved position in a shard that changed is refused.
    let mut l = ShardLoader::new(files.clone(), 3, 2).unwrap();
    let mut state = l.state();
    state.shard_tokens = 99;
    let e = l.restore(&state).unwrap_err().to_string();
    assert!(
        e.contains("held 99 tokens when the position was saved and holds 23 now"),
        "{e}"
    );
    state.shard_tokens = 23;
    state.shard_file = "other.bin".into();
    let e = l.restore(&state).unwrap_err().to_string();
    assert!(
        e.contains("saved data position is in shard other.bin"),
        "{e}"
    );
}

#[test]
fn capacity_from_the_start_matches_what_reading_does() {
    let dir = tempfile::tempdir().unwrap();
    let files = two_shards(dir.path());
    for (b, t) in [(3usize, 2usize), (1, 4), (2, 3)] {
        let l = ShardLoader::new(files.clone(), b, t).unwrap();
        let max = l.max_sequences_from_start();
        // 23 and 10 tokens: (23 - 1) / t + (10 - 1) / t sequences.
        assert_eq!(max, 22 / t + 9 / t, "b={b} t={t}");
        for seqs in 1..=max + 2 {
            let mut r = ShardLoader::new(files.clone(), b, t)
                .unwrap()
                .without_wrapping();
            let mut left = seqs;
            let mut ok = true;
            while left > 0 {
                let n = left.min(b);
                if r.next_sequences(n).is_err() {
                    ok = false;
                    break;
                }
                left -= n;
            }
            assert_eq!(l.fits_from_start(seqs), ok, "b={b} t={t} seqs={seqs}");
            assert_eq!(ok, seqs <= max, "b={b} t={t} seqs={seqs} max={max}");
        }
    }
}

/// Every sequence of `seqs` read in batches of `b`: (inputs, targets) per sequence.
fn sequences_read(files: &[PathBuf], b: usize, t: usize, seqs: usize) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut l = ShardLoader::new(files.to_vec(), b, t)
        .unwrap()
        .without_wrapping();
    let mut out = Vec::new();
    let mut left = seqs;
    while left > 0 {
        let n = left.min(b);
        let batch = l.next_sequences(n).unwrap();
        for i in 0..n {
            let r = i * t..(i + 1) * t;
            out.push((batch.inputs[r.clone()].to_vec(), batch.targets[r].to_vec()));
        }
        left -= n;
    }
    out
}

#[test]
fn the_sequences_evaluation_reads_do_not_depend_on_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let files = two_shards(dir.path());
    // T = 3: shard a (0..23) holds 7 sequences, shard b (100..110) holds 3.
    let one = sequences_read(&files, 1, 3, 10);
    assert_eq!(one[0], (vec![0, 1, 2], vec![1, 2, 3]));
    assert_eq!(one[6], (vec![18, 19, 20], vec![19, 20, 21]));
    assert_eq!(one[7], (vec![100, 101, 102], vec![101, 102, 103]));
    for b in [2, 3] {
        assert_eq!(sequences_read(&files, b, 3, 10), one, "b={b}");
    }
    // Batches of 2 by the seed's batch rule drop shard a's 7th sequence (18..21).
    let mut seed = ShardLoader::new(files.clone(), 2, 3).unwrap();
    for _ in 0..3 {
        seed.next_batch().unwrap();
    }
    assert_eq!(seed.next_batch().unwrap().inputs[0], 100);
    // Inside a shard the two readings agree.
    let mut a = ShardLoader::new(files.clone(), 3, 2).unwrap();
    let mut c = ShardLoader::new(files.clone(), 3, 2).unwrap();
    assert_eq!(a.next_batch_of(3).unwrap(), c.next_sequences(3).unwrap());
    // Where they lie: 7 windows of shard a (tokens 0..22), 3 of shard b (0..10).
    let l = ShardLoader::new(files.clone(), 2, 3).unwrap();
    let spans = l.spans_from_start(9);
    assert_eq!(spans.len(), 2);
    assert_eq!((spans[0].start, spans[0].end), (0, 22));
    assert_eq!((spans[1].file.clone(), spans[1].end), (files[1].clone(), 7));
}

#[test]
fn rows_slice_a_window_into_micro_batches() {
    let dir = tempfile::tempdir().unwrap();
    let files = two_shards(dir.path());
    let mut l = ShardLoader::new(files, 3, 2).unwrap();
    let w = l.next_batch().unwrap();
    let m = w.rows(1, 2);
    assert_eq!(m.inputs, vec![2, 3, 4, 5]);
    assert_eq!(m.targets, vec![3, 4, 5, 6]);
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
