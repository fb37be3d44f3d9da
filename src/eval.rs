//! Evaluation: the mean cross-entropy over the first N tokens of the val shards, read as the
//! seed reads them, in fp32 (TF32 matmuls on CUDA) without gradients.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::data::prefetch::{self, HostBatch};
use crate::data::ShardLoader;
use crate::model::{Compute, Gpt};

/// Anything that scores next-token predictions: a model, or (later) a stack of models.
pub trait LanguageModel {
    fn loss(&self, idx: &Tensor, targets: &Tensor, c: Compute) -> Tensor;
    fn vocab_size(&self) -> i64;
    /// The residual stream's width (sizes evaluation batches).
    fn width(&self) -> i64;
}

impl LanguageModel for Gpt {
    fn loss(&self, idx: &Tensor, targets: &Tensor, c: Compute) -> Tensor {
        Gpt::loss(self, idx, targets, c)
    }
    fn vocab_size(&self) -> i64 {
        self.cfg.vocab_size
    }
    fn width(&self) -> i64 {
        self.cfg.n_embd
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct EvalResult {
    pub val_loss: f64,
    /// Tokens scored (whole sequences, at most the tokens asked for).
    pub tokens: i64,
    pub seconds: f64,
}

/// Scores the first `tokens` tokens (whole sequences of the loader's length) from the start
/// of the loader's shards, in batches of the loader's size and a smaller last one.
pub fn evaluate(
    model: &dyn LanguageModel,
    loader: &mut ShardLoader,
    tokens: i64,
    device: Device,
) -> Result<EvalResult> {
    let s = evaluate_many(
        &[model],
        loader,
        tokens,
        device,
        &mut crate::progress::Silent,
    )?;
    Ok(EvalResult {
        val_loss: s.losses[0],
        tokens: s.tokens,
        seconds: s.seconds,
    })
}

/// Mean losses, one per model, over the same tokens.
#[derive(Debug, Clone)]
pub struct Scores {
    pub losses: Vec<f64>,
    pub tokens: i64,
    pub seconds: f64,
}

/// Scores the first `tokens` tokens (whole sequences) from the start of the loader's shards
/// with every model, in batches of the loader's size and a smaller last one: each batch is
/// read once and every model scores it, tokens reported to `progress` as stage `eval`.
///
/// The loader is read on another thread, ahead of the device ([`crate::data::prefetch`]);
/// on CUDA several of its batches go through the models in one forward
/// ([`loader_batches_per_forward`]). Which tokens are scored depends only on `tokens` and
/// the sequence length, never on the batch size: sequences are read one after the other,
/// a sequence that does not fit in a shard's rest starting the next shard
/// ([`ShardLoader::next_sequences`]); inside a shard that is what the seed's validation
/// reads. The batch size only groups them (and so decides float rounding). The losses are
/// summed on the device and read back once, at the end.
pub fn evaluate_many(
    models: &[&dyn LanguageModel],
    loader: &mut ShardLoader,
    tokens: i64,
    device: Device,
    progress: &mut dyn crate::progress::Sink,
) -> Result<Scores> {
    evaluate_share(models, loader, tokens, device, progress, (0, 1))
}

/// [`evaluate`] split over the processes of a data-parallel training: process `rank` of
/// `world` scores the chunks `i` with `i mod world = rank` and returns its share of the
/// mean (its losses' sum over all the tokens scored), so the shares summed over the
/// processes are the mean.
pub fn evaluate_part(
    model: &dyn LanguageModel,
    loader: &mut ShardLoader,
    tokens: i64,
    device: Device,
    (rank, world): (usize, usize),
) -> Result<EvalResult> {
    let mut silent = crate::progress::Silent;
    let s = evaluate_share(&[model], loader, tokens, device, &mut silent, (rank, world))?;
    Ok(EvalResult {
        val_loss: s.losses[0],
        tokens: s.tokens,
        seconds: s.seconds,
    })
}

fn evaluate_share(
    models: &[&dyn LanguageModel],
    loader: &mut ShardLoader,
    tokens: i64,
    device: Device,
    progress: &mut dyn crate::progress::Sink,
    (rank, world): (usize, usize),
) -> Result<Scores> {
    let start = Instant::now();
    let t = loader.seq_len() as i64;
    let b = loader.batch_size() as i64;
    let sequences = tokens / t;
    if sequences == 0 {
        bail!("{tokens} tokens are less than one sequence of {t}");
    }
    // Never score a token twice: running out of val tokens is an error, not a wrap-around.
    loader.set_wrapping(false);
    loader.reset()?;
    let group = models
        .iter()
        .map(|m| loader_batches_per_forward(device, m.width(), b, t))
        .min()
        .unwrap_or(1);
    let min_vocab = models.iter().map(|m| m.vocab_size()).min().unwrap_or(0);
    let mut left = sequences;
    // Read on the prefetch thread: up to `group` loader batches as one chunk of host tensors.
    let requested = sequences * t;
    let produce = || read_chunk(loader, &mut left, b, group, min_vocab, requested, device);
    let sums = tch::no_grad(|| {
        prefetch::scoped(2, produce, |chunks| -> Result<Vec<Tensor>> {
            let mut sums: Vec<Tensor> = models
                .iter()
                .map(|_| Tensor::zeros([], (Kind::Double, device)))
                .collect();
            let mut done = 0;
            for (i, chunk) in chunks.enumerate() {
                let (host, n) = match chunk? {
                    Chunk::OutOfVocab { max, place } => {
                        for m in models {
                            check_vocab(max, m.vocab_size(), || place.clone())?;
                        }
                        bail!("token id {max} in {place} is outside a model's vocabulary");
                    }
                    Chunk::Tokens { host, tokens } => (host, tokens),
                };
                if i % world != rank {
                    done += n;
                    continue;
                }
                let (x, y) = host.to_device(device);
                for (m, sum) in models.iter().zip(sums.iter_mut()) {
                    // The mean of the chunk times its tokens, summed in fp64 (as on the host).
                    *sum += m.loss(&x, &y, Compute::Fp32).to_kind(Kind::Double) * n as f64;
                }
                done += n;
                progress.update("eval", done, sequences * t);
            }
            Ok(sums)
        })
    })?;
    let scored = sequences * t;
    let losses = sums
        .iter()
        .map(|s| s.double_value(&[]) / scored as f64)
        .collect();
    progress.finish();
    crate::device::synchronize(device);
    Ok(Scores {
        losses,
        tokens: scored,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The next chunk for [`evaluate_many`]: up to `group` loader batches (of at most `b`
/// sequences, `left` still to read of the `requested` tokens) as one host batch, or where
/// a token id some model cannot embed was read; `None` when every sequence is read.
fn read_chunk(
    loader: &mut ShardLoader,
    left: &mut i64,
    b: i64,
    group: usize,
    min_vocab: i64,
    requested: i64,
    device: Device,
) -> Option<Result<Chunk>> {
    if *left == 0 {
        return None;
    }
    let t = loader.seq_len() as i64;
    let mut batches = Vec::new();
    while *left > 0 && batches.len() < group {
        let n = (*left).min(b);
        match loader.next_sequences(n as usize) {
            Ok(batch) => {
                let max = batch.max_token();
                if max >= min_vocab {
                    *left = 0;
                    let place = loader_place(loader);
                    return Some(Ok(Chunk::OutOfVocab { max, place }));
                }
                batches.push(batch);
            }
            Err(e) => {
                return Some(Err(anyhow::anyhow!(
                    "cannot score {requested} tokens of {t}-token sequences: {e}"
                )))
            }
        }
        *left -= n;
    }
    let scored = batches.iter().map(|x| (x.b * x.t) as i64).sum();
    Some(Ok(Chunk::Tokens {
        host: HostBatch::from_batches(&batches, device),
        tokens: scored,
    }))
}

/// What the prefetch thread hands the evaluation loop.
enum Chunk {
    /// Loader batches as one, and the tokens they hold.
    Tokens { host: HostBatch, tokens: i64 },
    /// A batch with a token id some model's vocabulary lacks, and where it was read.
    OutOfVocab { max: i64, place: String },
}

/// Activation bytes an fp32 evaluation forward keeps alive per token and unit of width (a
/// generous bound: the residual stream, qkv, the MLP's 4C hidden and their temporaries).
const EVAL_BYTES_PER_TOKEN_WIDTH: i64 = 64 * 4;
/// Tokens per evaluation forward beyond which a GPU gains nothing from a larger batch.
const EVAL_MAX_TOKENS_PER_FORWARD: i64 = 1 << 17;

/// Loader batches (of `b` sequences of `t` tokens) per evaluation forward: one on the CPU
/// (larger batches do not pay there); on CUDA as many as fit in
/// [`EVAL_MAX_TOKENS_PER_FORWARD`] tokens and in a quarter of the device's free memory
/// (the CUDA runtime's figure, else NVML's; one when it is unknown).
pub fn loader_batches_per_forward(device: Device, width: i64, b: i64, t: i64) -> usize {
    let Device::Cuda(i) = device else {
        return 1;
    };
    // The CUDA runtime's figure first (right on a MIG slice), else NVML's.
    let free = match crate::device::memory::cuda_memory_info(i) {
        Some((free, _)) => free as i64,
        None => match crate::device::nvml::gpu(i) {
            Some(g) => g.memory_total.saturating_sub(g.memory_used) as i64,
            None => return 1,
        },
    };
    let per_batch = (b * t * width * EVAL_BYTES_PER_TOKEN_WIDTH).max(1);
    let by_memory = free / 4 / per_batch;
    let by_tokens = EVAL_MAX_TOKENS_PER_FORWARD / (b * t).max(1);
    by_memory.min(by_tokens).max(1) as usize
}

/// Refuses token ids the model's embedding cannot look up; `place` says where they came from.
pub fn check_vocab(max_token: i64, vocab_size: i64, place: impl FnOnce() -> String) -> Result<()> {
    if max_token >= vocab_size {
        bail!(
            "token id {max_token} in {} is outside the model's vocabulary of {vocab_size}: were these shards made with another tokenizer?",
            place()
        );
    }
    Ok(())
}

/// Where a loader's last batch came from, for errors.
pub fn loader_place(loader: &ShardLoader) -> String {
    let s = loader.state();
    format!(
        "{} (near token {})",
        loader.files()[s.shard.min(loader.files().len() - 1)].display(),
        s.position
    )
}
