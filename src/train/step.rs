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
use crate::dist::{GradBuckets, ReduceOp, World};
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
    apply_optimizers_on(model, adamw, muon, (factor, accum), &World::single(), None)
        .expect("one process has no collective to fail");
}

/// The parameters that train, in the order the forward pass first uses them (`W`, when it
/// trains, then the blocks' matrices): backward finishes them in the reverse order, which
/// is the order the gradient buckets fill and start in.
pub fn trained_parameters(model: &Gpt, wte_trains: bool) -> Vec<&Tensor> {
    let mut params = Vec::new();
    if wte_trains {
        params.push(&model.wte);
    }
    params.extend(model.block_matrices());
    params
}

/// [`apply_optimizers`] in every process of `world`: the gradients are first summed over
/// the processes (in `buckets`: what backward started is waited for, the rest started
/// now), then averaged and applied as in one process, Muon's Newton-Schulz sharded over
/// the processes.
pub fn apply_optimizers_on(
    model: &Gpt,
    adamw: Option<&mut AdamW>,
    muon: &mut Muon,
    (factor, accum): (f64, i64),
    world: &World,
    buckets: Option<&GradBuckets>,
) -> Result<()> {
    if let (Some(group), Some(b)) = (world.group(), buckets) {
        b.all_reduce(group)?;
    }
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
    muon.step_on(&params, factor, world)?;
    for p in params {
        p.shallow_clone().zero_grad();
    }
    model.wte.shallow_clone().zero_grad();
    Ok(())
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
    // Process p runs the logical ranks r with r mod world = p; micro-batch k is rank k / per_rank's.
    let per_rank = cfg.batch.per_rank_micro_batches() as usize;
    let (rank, world) = (st.world.rank, st.world.size);
    Ok(train_steps(
        stream,
        st.step,
        st.device,
        move |step| seed_mode && every > 0 && step % every == 0,
        move |k| (k / per_rank) % world == rank,
    ))
}

/// A step's losses as this process computed them, still on the device.
pub(super) struct StepLosses {
    pub losses: Vec<Tensor>,
    pub latents: Vec<Tensor>,
    /// Each loss's place among the step's micro-batches, and their number.
    pub index: Vec<usize>,
    pub total: usize,
}

/// The step's mean train loss and mean latent loss (COCONUT steps) over every process's
/// micro-batches, and whether any process was asked to stop. In several processes the
/// losses go into one vector at their place (zeros elsewhere), summed over the processes
/// with the stop flag: the mean is then taken over the same values in the same order as
/// in one process.
pub(super) fn reduce_losses(
    world: &World,
    l: StepLosses,
    stop: bool,
) -> Result<(Tensor, Option<Tensor>, bool)> {
    let mean = |v: &[Tensor]| Tensor::stack(v, 0).mean(Kind::Float);
    if world.size == 1 {
        let latent = (!l.latents.is_empty()).then(|| mean(&l.latents));
        return Ok((mean(&l.losses), latent, stop));
    }
    let n = l.total as i64;
    let Some(first) = l.losses.first() else {
        anyhow::bail!("this process ran none of the step's micro-batches");
    };
    let all = Tensor::zeros([2 * n + 1], (first.kind(), first.device()));
    for (j, &k) in l.index.iter().enumerate() {
        all.get(k as i64).copy_(&l.losses[j]);
        if let Some(latent) = l.latents.get(j) {
            all.get(n + k as i64).copy_(latent);
        }
    }
    if stop {
        let _ = all.get(2 * n).fill_(1.0);
    }
    world.all_reduce(&[&all], ReduceOp::Sum)?;
    let loss = all.narrow(0, 0, n).mean(Kind::Float);
    let latent = (!l.latents.is_empty()).then(|| all.narrow(0, n, n).mean(Kind::Float));
    let stop = all.double_value(&[2 * n]) > 0.0;
    Ok((loss, latent, stop))
}

/// One step's forward and backward passes over this process's micro-batches (read ahead
/// in `data`); returns their train losses and, on COCONUT steps, latent losses, as scalars
/// still on the device (reading them waits for the device).
pub(super) fn forward_backward_step(
    st: &mut State,
    coconut_step: bool,
    data: StepData,
    hook: Option<PanicHook>,
) -> Result<StepLosses> {
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
    let of = data.total;
    for (k, host) in data.host.iter().enumerate() {
        st.stage = Stage::MicroBatch {
            step: st.step + 1,
            micro: data.index[k] + 1,
            of,
        };
        if let (Some(h), 0) = (hook, k) {
            h.fire(st.step + 1);
        }
        let (x, y) = host.to_device(st.device);
        let next_y = data.next.as_ref().map(|n| n[k].to_device(st.device).1);
        let last = k + 1 == data.host.len();
        let buckets = st.buckets.as_ref().filter(|_| last);
        let (l, latent) = coconut::forward_backward_then(
            &st.model,
            (&x, &y, next_y.as_ref()),
            coconut_step.then_some(&st.cfg.coconut),
            st.compute,
            &|| buckets.iter().for_each(|b| b.arm()),
        );
        losses.push(l);
        latents.extend(latent);
    }
    // What backward did not start starts now, before the losses' all-reduce: every process
    // issues its collectives in one order.
    if let (Some(b), Some(group)) = (&st.buckets, st.world.group()) {
        b.launch(group)?;
    }
    Ok(StepLosses {
        losses,
        latents,
        index: data.index,
        total: data.total,
    })
}
