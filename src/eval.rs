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
    let s = evaluate_many(&[model], loader, tokens, device, false)?;
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
/// read once and every model scores it. With `progress`, a bar (tokens, tokens/s, ETA) on
/// stderr.
pub fn evaluate_many(
    models: &[&dyn LanguageModel],
    loader: &mut ShardLoader,
    tokens: i64,
    device: Device,
    progress: bool,
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
    let bar = (progress && !crate::progress::json_enabled()).then(|| {
        let bar = indicatif::ProgressBar::new((sequences * t) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {human_pos}/{human_len} tokens  {per_sec}  ETA {eta}",
            )
            .expect("valid progress template"),
        );
        bar
    });
    let mut sums = vec![0.0f64; models.len()];
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
            let (x, y) = batch.tensors(device);
            for (m, sum) in models.iter().zip(sums.iter_mut()) {
                check_vocab(batch.max_token(), m.vocab_size(), || loader_place(loader))?;
                *sum += m.loss(&x, &y, Compute::Fp32).double_value(&[]) * (n * t) as f64;
            }
            left -= n;
            crate::progress::emit("eval", (sequences - left) * t, sequences * t);
            if let Some(bar) = &bar {
                bar.inc((n * t) as u64);
            }
        }
        Ok(())
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    crate::device::synchronize(device);
    let scored = sequences * t;
    Ok(Scores {
        losses: sums.iter().map(|s| s / scored as f64).collect(),
        tokens: scored,
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
