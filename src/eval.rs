//! Evaluation: the mean cross-entropy over the first N tokens of the val shards, read as the
//! seed reads them, in fp32 (TF32 matmuls on CUDA) without gradients.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use tch::{Device, Tensor};

use crate::data::ShardLoader;
use crate::model::{Compute, Gpt};

/// Anything that scores next-token predictions: a model, or (later) a stack of models.
pub trait LanguageModel {
    fn loss(&self, idx: &Tensor, targets: &Tensor, c: Compute) -> Tensor;
    fn vocab_size(&self) -> i64;
}

impl LanguageModel for Gpt {
    fn loss(&self, idx: &Tensor, targets: &Tensor, c: Compute) -> Tensor {
        Gpt::loss(self, idx, targets, c)
    }
    fn vocab_size(&self) -> i64 {
        self.cfg.vocab_size
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
    let mut sum = 0.0f64;
    let mut left = sequences;
    tch::no_grad(|| -> Result<()> {
        while left > 0 {
            let n = left.min(b);
            let batch = loader.next_batch_of(n as usize).map_err(|e| {
                anyhow::anyhow!(
                    "cannot score {} tokens of {t}-token sequences: {e}",
                    sequences * t
                )
            })?;
            check_vocab(batch.max_token(), model.vocab_size(), || {
                loader_place(loader)
            })?;
            let (x, y) = batch.tensors(device);
            let loss = model.loss(&x, &y, Compute::Fp32).double_value(&[]);
            sum += loss * (n * t) as f64;
            left -= n;
        }
        Ok(())
    })?;
    crate::device::synchronize(device);
    Ok(EvalResult {
        val_loss: sum / (sequences * t) as f64,
        tokens: sequences * t,
        seconds: start.elapsed().as_secs_f64(),
    })
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
