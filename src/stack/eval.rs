//! One pass over the val tokens for several models: each batch is read once and every model
//! scores it, so the stack and its parts are compared on exactly the same tokens.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{bail, Result};
use tch::Device;

use crate::data::ShardLoader;
use crate::eval::{check_vocab, loader_place, LanguageModel};
use crate::model::Compute;

/// Mean losses, one per model, over the same tokens.
#[derive(Debug, Clone)]
pub struct Scores {
    pub losses: Vec<f64>,
    pub tokens: i64,
    pub seconds: f64,
}

/// Scores the first `tokens` tokens (whole sequences) of the loader's shards with every
/// model, batch by batch, exactly as [`crate::eval::evaluate`] scores one model. A progress
/// bar (tokens, tokens/s, ETA) goes to stderr when it is a terminal.
pub fn evaluate_together(
    models: &[&dyn LanguageModel],
    loader: &mut ShardLoader,
    tokens: i64,
    device: Device,
) -> Result<Scores> {
    let start = Instant::now();
    let t = loader.seq_len() as i64;
    let b = loader.batch_size() as i64;
    let sequences = tokens / t;
    if sequences == 0 {
        bail!("{tokens} tokens are less than one sequence of {t}");
    }
    loader.set_wrapping(false);
    loader.reset()?;
    let bar = std::io::stderr().is_terminal().then(|| {
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
