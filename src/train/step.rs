//! One training step's work: the train stream read ahead, the step's micro-batches forward
//! and backward (with a latent pass each on COCONUT-parallel steps), and the update
//! (gradients averaged, AdamW on `W` unless frozen, Muon on the block matrices).

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use super::faults::{PanicHook, Stage};
use super::setup::State;
use super::{coconut, AdamW, Muon};
use crate::config::CoconutMode;
use crate::data::prefetch::{train_steps, Prefetcher, StepData};
use crate::data::TrainStream;
use crate::eval::check_vocab;
use crate::model::Gpt;

/// Averages the accumulated gradients over `accum` micro-batches, steps AdamW on `W` (when
/// it trains) and Muon on the block matrices, and zeroes the gradients.
pub fn apply_optimizers(
    model: &Gpt,
    adamw: Option<&mut AdamW>,
    muon: &mut Muon,
    factor: f64,
    accum: i64,
) {
    let params = model.block_matrices();
    tch::no_grad(|| {
        for p in params.iter().chain(adamw.is_some().then_some(&&model.wte)) {
            let g = p.grad();
            if g.defined() && accum > 1 {
                let _ = g.shallow_clone().g_div_scalar_(accum as f64);
            }
        }
    });
    if let Some(a) = adamw {
        a.step(&model.wte, factor);
    }
    muon.step(&params, factor);
    for p in params {
        p.shallow_clone().zero_grad();
    }
    model.wte.shallow_clone().zero_grad();
}

/// The run's train stream read ahead on another thread, from where the run stands.
pub(super) fn prefetch_steps(st: &State) -> Result<Prefetcher<StepData>> {
    let cfg = &st.cfg;
    let mut stream = TrainStream::new(
        st.train.files().to_vec(),
        cfg.batch.micro_batch as usize,
        cfg.model.seq_len as usize,
        cfg.batch.ranks as usize,
        cfg.batch.per_rank_micro_batches() as usize,
    )
    .context("data.train")?;
    stream.restore(&st.train.state()).context("data.train")?;
    let every = cfg.coconut.every;
    // The seed loaded the next batch between the two passes: its targets score the latents.
    let seed_mode = cfg.coconut.mode == CoconutMode::Seed;
    Ok(train_steps(stream, st.step, st.device, move |step| {
        seed_mode && every > 0 && step % every == 0
    }))
}

/// One step's forward and backward passes over its micro-batches (read ahead in `data`);
/// returns the mean train loss and, on COCONUT steps, the mean latent loss, as scalars
/// still on the device (reading them waits for the device).
pub(super) fn forward_backward_step(
    st: &mut State,
    coconut_step: bool,
    data: StepData,
    hook: Option<PanicHook>,
) -> Result<(Tensor, Option<Tensor>)> {
    let vocab = st.model.cfg.vocab_size;
    // The run's stream moves to where the prefetched step left it (checkpoints save it).
    st.train.restore(&data.state_after)?;
    let batches = &data.batches;
    for b in batches.iter().chain(data.next_batches.iter().flatten()) {
        check_vocab(b.max_token(), vocab, || {
            format!(
                "the train shards of step {} ({})",
                st.step + 1,
                st.cfg.data.train
            )
        })?;
    }
    // Losses stay on the device until the step's update is queued: one synchronisation
    // per step, after the optimizers, so the device never idles waiting for the host.
    let mut losses = Vec::with_capacity(batches.len());
    let mut latents = Vec::new();
    let of = data.host.len();
    for (k, host) in data.host.iter().enumerate() {
        st.stage = Stage::MicroBatch {
            step: st.step + 1,
            micro: k + 1,
            of,
        };
        if let (Some(h), 0) = (hook, k) {
            h.fire(st.step + 1);
        }
        let (x, y) = host.to_device(st.device);
        let next_y = data.next.as_ref().map(|n| n[k].to_device(st.device).1);
        let (l, latent) = coconut::forward_backward(
            &st.model,
            &x,
            &y,
            next_y.as_ref(),
            coconut_step.then_some(&st.cfg.coconut),
            st.compute,
        );
        losses.push(l);
        latents.extend(latent);
    }
    let mean = |v: &[Tensor]| Tensor::stack(v, 0).mean(Kind::Float);
    Ok((mean(&losses), (!latents.is_empty()).then(|| mean(&latents))))
}
