//! The training loop. It writes everything a run produces into its run directory, so the
//! lab and scripts watch runs by reading files, and a run never depends on who started it.
//!
//! Per step: the step's micro-batches (each emulated rank's, rank-major) forward/backward
//! (plus a latent pass each on COCONUT-parallel steps), gradients averaged, AdamW on `W`
//! (unless frozen) and Muon on the block matrices with the schedule's factor, then metrics,
//! validation and checkpoints.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::checkpointing::checkpoint_if_finite;
use super::faults::{self, PanicHook, Stage};
use super::reporter::{say, Reporter};
use super::setup::{new_run, resume_run, State, TrainOptions};
use super::{coconut, lr_factor, AdamW, Muon};
use crate::config::CoconutMode;
use crate::data::prefetch::{train_steps, Prefetcher, StepData};
use crate::data::TrainStream;
use crate::eval::{check_vocab, evaluate};
use crate::model::Gpt;
use crate::runs::checkpoint::ValPoint;
use crate::runs::run_dir::{MetricsRow, RunState};

#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    Done,
    /// Stopped by `--stop-after` (false) or by SIGINT/SIGTERM (true).
    Stopped {
        by_signal: bool,
    },
    Failed(String),
}

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

fn validate(st: &mut State) -> Result<f64> {
    st.stage = Stage::Validation { step: st.step };
    let r = evaluate(&st.model, &mut st.val, st.cfg.eval.val_tokens, st.device)?;
    st.val_history.push(ValPoint {
        step: st.step,
        val_loss: r.val_loss,
    });
    st.run.log(&format!(
        "step {} val_loss {:.4} ({} tokens, {:.1}s)",
        st.step, r.val_loss, r.tokens, r.seconds
    ));
    Ok(r.val_loss)
}

/// Runs (or resumes) a training run to its end, a stop, or a failure. A panic in the loop
/// (libtorch's CUDA out-of-memory is one) ends the run `failed` like any other failure.
pub fn train(opts: &TrainOptions) -> Result<(PathBuf, TrainOutcome)> {
    if opts.stop_after.is_some_and(|s| s < 1) {
        bail!("--stop-after must be a step of at least 1");
    }
    super::signals::outlive_the_terminal();
    let stop = super::signals::install_stop_flag()?;
    let setup = catch_unwind(AssertUnwindSafe(|| match &opts.resume {
        Some(p) => resume_run(p, opts.device),
        None => new_run(opts),
    }));
    let mut st = match setup {
        Ok(st) => st?,
        Err(panic) => bail!(
            "{}",
            faults::describe_panic(
                &faults::payload_text(panic.as_ref()),
                Stage::Setup,
                &opts.config.clone().unwrap_or_default()
            )
        ),
    };
    if let Some(s) = opts.stop_after {
        if s <= st.step {
            bail!("--stop-after {s}: the run is already at step {}", st.step);
        }
    }
    let run_path = st.run.path.clone();
    let hook = PanicHook::from_env();
    let outcome = match catch_unwind(AssertUnwindSafe(|| run_loop(&mut st, opts, &stop, hook))) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            let msg = format!("{e:#}");
            st.run.log(&format!("failed: {msg}"));
            let _ = st.status(RunState::Failed, &msg);
            return Err(e);
        }
        Err(panic) => {
            let text = faults::payload_text(panic.as_ref());
            let msg = faults::describe_panic(&text, st.stage, &st.cfg);
            let full = record_failure(&mut st, msg)?;
            say(&format!("failed: {full}"));
            TrainOutcome::Failed(full)
        }
    };
    Ok((run_path, outcome))
}

/// The run's train stream read ahead on another thread, from where the run stands.
fn prefetch_steps(st: &State) -> Result<Prefetcher<StepData>> {
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
fn forward_backward_step(
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

fn run_loop(
    st: &mut State,
    opts: &TrainOptions,
    stop: &AtomicBool,
    hook: Option<PanicHook>,
) -> Result<TrainOutcome> {
    let total = st.cfg.schedule.steps;
    let accum = st.cfg.batch.accumulation_steps();
    let tokens_per_step = st.cfg.tokens_per_step();
    let (warmup, warmdown) = (st.cfg.schedule.warmup, st.cfg.schedule.warmdown);
    let val_every = st.cfg.eval.val_every;
    let ckpt_every = st.cfg.checkpoint_every;
    st.run.log(&format!(
        "device {} | {} parameters | compute {:?} | {} rank(s) x {} x {} sequences a step | steps {}..{total}",
        crate::device::describe(st.device),
        st.model.num_parameters(),
        st.compute,
        st.cfg.batch.ranks,
        st.cfg.batch.per_rank_micro_batches(),
        st.cfg.batch.micro_batch,
        st.step
    ));
    st.status(
        RunState::Running,
        &format!("training on {}", crate::device::name(st.device)),
    )?;
    let mut rep = Reporter::new(total, st.step, st.cfg.log_every);
    rep.line(&format!(
        "run {} on {} ({} parameters)",
        st.run.path.display(),
        crate::device::describe(st.device),
        st.model.num_parameters()
    ));

    if st.step == 0 && val_every > 0 && !st.val_history.iter().any(|v| v.step == 0) {
        let v = validate(st)?;
        if !v.is_finite() {
            return fail(st, &rep, format!("non-finite val loss {v} at step 0"));
        }
        st.run.append_metrics(&MetricsRow {
            step: 0,
            val_loss: Some(v),
            elapsed_s: st.elapsed(),
            ..Default::default()
        })?;
        rep.line(&format!("step 0 val_loss {v:.4}"));
    }

    let mut steps = prefetch_steps(st)?;
    let mut first = true;
    while st.step < total {
        if stop.load(Ordering::SeqCst) {
            return stopped(st, &rep, true);
        }
        let t0 = Instant::now();
        let every = st.cfg.coconut.every;
        let coconut_step = every > 0 && (st.step + 1) % every == 0;
        let factor = lr_factor(st.step, total, warmup, warmdown);
        let (loss, latent) = forward_backward_step(st, coconut_step, steps.recv()?, hook)?;
        st.stage = Stage::Update { step: st.step + 1 };
        apply_optimizers(&st.model, st.adamw.as_mut(), &mut st.muon, factor, accum);
        // The step's one wait for the device. A non-finite loss fails the run here: its
        // update is never checkpointed (checkpoints are written only from finite weights).
        let train_loss = loss.double_value(&[]);
        let latent_loss = latent.map(|l| l.double_value(&[]));
        if !train_loss.is_finite() {
            return fail(
                st,
                &rep,
                format!(
                    "non-finite training loss ({train_loss}) at step {}",
                    st.step + 1
                ),
            );
        }
        crate::device::synchronize(st.device);
        let step_s = t0.elapsed().as_secs_f64();
        st.step += 1;
        st.tokens_seen += tokens_per_step;
        let mut row = MetricsRow {
            step: st.step,
            train_loss: Some(train_loss),
            latent_loss,
            lr_factor: Some(factor),
            tokens_seen: st.tokens_seen,
            tokens_per_s: Some(tokens_per_step as f64 / step_s),
            ..Default::default()
        };
        if (val_every > 0 && st.step % val_every == 0) || st.step == total {
            let v = validate(st)?;
            if !v.is_finite() {
                return fail(
                    st,
                    &rep,
                    format!("non-finite val loss ({v}) at step {}", st.step),
                );
            }
            row.val_loss = Some(v);
            rep.line(&format!("step {} val_loss {v:.4}", st.step));
        }
        row.elapsed_s = st.elapsed();
        st.run.append_metrics(&row)?;
        rep.step(&row, total, step_s, first);
        first = false;
        let is_ckpt = (ckpt_every > 0 && st.step % ckpt_every == 0) || st.step == total;
        if is_ckpt {
            checkpoint_if_finite(st, &rep)?;
            if st.last_checkpoint_step != Some(st.step) {
                return fail(
                    st,
                    &rep,
                    format!("non-finite weights at step {} (after its update)", st.step),
                );
            }
        }
        st.status(
            RunState::Running,
            &format!("step {}/{total} loss {train_loss:.4}", st.step),
        )?;
        if opts.stop_after.is_some_and(|s| st.step >= s) && st.step < total {
            return stopped(st, &rep, false);
        }
    }
    rep.finish();
    let last_val = st.val_history.last().map(|v| v.val_loss);
    let msg = format!(
        "done: {} steps{}",
        st.step,
        last_val
            .map(|v| format!(", val_loss {v:.4}"))
            .unwrap_or_default()
    );
    st.run.log(&msg);
    st.status(RunState::Done, &msg)?;
    rep.line(&msg);
    Ok(TrainOutcome::Done)
}

fn stopped(st: &mut State, rep: &Reporter, by_signal: bool) -> Result<TrainOutcome> {
    if st.last_checkpoint_step != Some(st.step) {
        checkpoint_if_finite(st, rep)?;
    }
    rep.finish();
    let why = if by_signal {
        "by a signal"
    } else {
        "by --stop-after"
    };
    let msg = format!(
        "stopped {why} at step {}/{}; resume with --resume",
        st.step, st.cfg.schedule.steps
    );
    st.run.log(&msg);
    st.status(RunState::Stopped, &msg)?;
    rep.line(&msg);
    Ok(TrainOutcome::Stopped { by_signal })
}

fn fail(st: &mut State, rep: &Reporter, msg: String) -> Result<TrainOutcome> {
    rep.finish();
    let full = record_failure(st, msg)?;
    rep.line(&format!("failed: {full}"));
    Ok(TrainOutcome::Failed(full))
}

/// Logs a failure and writes the final status; returns the message with the last good
/// checkpoint named.
fn record_failure(st: &mut State, msg: String) -> Result<String> {
    let last = st
        .last_checkpoint_step
        .map(|s| format!("; the last good checkpoint is step {s}"))
        .unwrap_or_else(|| "; no checkpoint was written".into());
    let full = format!("{msg}{last}");
    st.run.log(&format!("failed: {full}"));
    st.status(RunState::Failed, &full)?;
    Ok(full)
}
