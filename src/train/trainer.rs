//! The training loop. It writes everything a run produces into its run directory, so the
//! lab and scripts watch runs by reading files, and a run never depends on who started it.
//!
//! Per step: the step's micro-batches (each emulated rank's, rank-major) forward/backward
//! (plus a latent pass each on COCONUT-parallel steps), gradients averaged, AdamW on `W`
//! (unless frozen) and Muon on the block matrices with the schedule's factor, then metrics,
//! validation and checkpoints.

use std::ops::ControlFlow::{self, Break, Continue};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};

use super::checkpointing::checkpoint_if_finite;
use super::faults::{self, PanicHook, Stage};
use super::lr_factor;
use super::reporter::{say, Reporter};
use super::setup::{State, TrainOptions};
use super::step::{apply_optimizers_on, forward_backward_step, prefetch_steps, reduce_losses};
use crate::data::prefetch::StepData;
use crate::eval::{evaluate, evaluate_part};
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

fn validate(st: &mut State) -> Result<f64> {
    st.stage = Stage::Validation { step: st.step };
    let tokens = st.cfg.eval.val_tokens;
    let mut r = if st.world.size > 1 {
        let part = (st.world.rank, st.world.size);
        evaluate_part(&st.model, &mut st.val, tokens, st.device, part)?
    } else {
        evaluate(&st.model, &mut st.val, tokens, st.device)?
    };
    r.val_loss = super::parallel::sum_f64(&st.world, st.device, r.val_loss)?;
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
    let setup = catch_unwind(AssertUnwindSafe(|| super::parallel::setup(opts)));
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
        Ok(Err(e)) if st.world.size > 1 => {
            // A collective that failed (another process died or hung): say where to resume.
            let full = record_failure(&mut st, format!("{e:#}"))?;
            bail!("{full}");
        }
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

fn run_loop(
    st: &mut State,
    opts: &TrainOptions,
    stop: &AtomicBool,
    hook: Option<PanicHook>,
) -> Result<TrainOutcome> {
    let total = st.cfg.schedule.steps;
    // Here, so that a failure (out of memory for the flat buffers) ends the run `failed`.
    st.buckets = super::parallel::buckets(st, opts.overlap)?;
    let mut rep = announce(st)?;
    if let Break(o) = validate_at_start(st, &rep)? {
        return Ok(o);
    }
    let mut steps = prefetch_steps(st)?;
    let mut first = true;
    // Several processes stop together: the flag travels with the step's losses, and all
    // of them stop after the step in which any one was asked to.
    let together = st.world.size > 1;
    while st.step < total {
        if stop.load(Ordering::SeqCst) && !together {
            return stopped(st, &rep, true);
        }
        let t0 = Instant::now();
        let data = steps.recv()?;
        let (mut row, train_loss, asked) = match train_step(st, &rep, data, hook, stop)? {
            Continue(r) => r,
            Break(o) => return Ok(o),
        };
        let step_s = t0.elapsed().as_secs_f64();
        row.tokens_per_s = Some(st.cfg.tokens_per_step() as f64 / step_s);
        if let Break(o) = validate_if_due(st, &rep, &mut row)? {
            return Ok(o);
        }
        row.elapsed_s = st.elapsed();
        st.append_metrics(&row)?;
        rep.step(&row, total, step_s, first);
        if first {
            say_overlap(st, &rep);
        }
        first = false;
        if let Break(o) = checkpoint_if_due(st, &rep)? {
            return Ok(o);
        }
        st.status(
            RunState::Running,
            &format!("step {}/{total} loss {train_loss:.4}", st.step),
        )?;
        if asked && st.step < total {
            return stopped(st, &rep, true);
        }
        if opts.stop_after.is_some_and(|s| st.step >= s) && st.step < total {
            return stopped(st, &rep, false);
        }
    }
    done(st, &rep)
}

/// In several processes, after the first step: how the gradients travelled.
fn say_overlap(st: &State, rep: &Reporter) {
    if let Some(b) = &st.buckets {
        let line = format!(
            "all-reduce: {} gradient bucket(s), {:.1} MB a step; {} started while the last backward pass ran",
            b.len(),
            b.bytes() as f64 / 1e6,
            b.started_in_backward()
        );
        st.run.log(&line);
        rep.line(&line);
    }
}

/// Logs what trains where and marks the run running; the reporter for its steps.
fn announce(st: &State) -> Result<Reporter> {
    let total = st.cfg.schedule.steps;
    st.run.log(&format!(
        "device {} | {} | {} parameters | compute {:?} | {} rank(s) x {} x {} sequences a step | steps {}..{total}",
        crate::device::describe(st.device),
        st.world.describe(),
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
    if !st.world.is_main() {
        rep = rep.silenced();
    }
    rep.line(&format!(
        "run {} on {} ({} parameters)",
        st.run.path.display(),
        crate::device::describe(st.device),
        st.model.num_parameters()
    ));
    Ok(rep)
}

/// The step-0 validation of a run that validates and has none yet.
fn validate_at_start(st: &mut State, rep: &Reporter) -> Result<ControlFlow<TrainOutcome>> {
    let due = st.step == 0 && st.cfg.eval.val_every > 0;
    if !due || st.val_history.iter().any(|v| v.step == 0) {
        return Ok(Continue(()));
    }
    let v = validate(st)?;
    if !v.is_finite() {
        return fail(st, rep, format!("non-finite val loss {v} at step 0")).map(Break);
    }
    st.append_metrics(&MetricsRow {
        step: 0,
        val_loss: Some(v),
        elapsed_s: st.elapsed(),
        ..Default::default()
    })?;
    rep.line(&format!("step 0 val_loss {v:.4}"));
    Ok(Continue(()))
}

/// One step's passes and update, the counters moved on; its metrics row (without the
/// throughput, validation and time), its train loss, and whether several processes were
/// asked to stop (any of them). A non-finite loss fails the run.
fn train_step(
    st: &mut State,
    rep: &Reporter,
    data: StepData,
    hook: Option<PanicHook>,
    stop: &AtomicBool,
) -> Result<ControlFlow<TrainOutcome, (MetricsRow, f64, bool)>> {
    let total = st.cfg.schedule.steps;
    let accum = st.cfg.batch.accumulation_steps();
    let (warmup, warmdown) = (st.cfg.schedule.warmup, st.cfg.schedule.warmdown);
    let every = st.cfg.coconut.every;
    let coconut_step = every > 0 && (st.step + 1) % every == 0;
    let factor = lr_factor(st.step, total, warmup, warmdown);
    let losses = forward_backward_step(st, coconut_step, data, hook)?;
    let asked = st.world.size > 1 && stop.load(Ordering::SeqCst);
    let (loss, latent, asked) = reduce_losses(&st.world, losses, asked)?;
    st.stage = Stage::Update { step: st.step + 1 };
    let (world, buckets) = (&st.world, st.buckets.as_ref());
    apply_optimizers_on(
        &st.model,
        st.adamw.as_mut(),
        &mut st.muon,
        (factor, accum),
        world,
        buckets,
    )?;
    // The step's one wait for the device. A non-finite loss fails the run here: its
    // update is never checkpointed (checkpoints are written only from finite weights).
    let train_loss = loss.double_value(&[]);
    let latent_loss = latent.map(|l| l.double_value(&[]));
    if !train_loss.is_finite() {
        let msg = format!(
            "non-finite training loss ({train_loss}) at step {}",
            st.step + 1
        );
        return fail(st, rep, msg).map(Break);
    }
    crate::device::synchronize(st.device);
    st.step += 1;
    st.tokens_seen += st.cfg.tokens_per_step();
    let row = MetricsRow {
        step: st.step,
        train_loss: Some(train_loss),
        latent_loss,
        lr_factor: Some(factor),
        tokens_seen: st.tokens_seen,
        ..Default::default()
    };
    Ok(Continue((row, train_loss, asked)))
}

/// Validates on `eval.val_every` steps and the last one, into `row`.
fn validate_if_due(
    st: &mut State,
    rep: &Reporter,
    row: &mut MetricsRow,
) -> Result<ControlFlow<TrainOutcome>> {
    let val_every = st.cfg.eval.val_every;
    if !((val_every > 0 && st.step % val_every == 0) || st.step == st.cfg.schedule.steps) {
        return Ok(Continue(()));
    }
    let v = validate(st)?;
    if !v.is_finite() {
        let msg = format!("non-finite val loss ({v}) at step {}", st.step);
        return fail(st, rep, msg).map(Break);
    }
    row.val_loss = Some(v);
    rep.line(&format!("step {} val_loss {v:.4}", st.step));
    Ok(Continue(()))
}

/// Checkpoints on `checkpoint_every` steps and the last one; weights that are not finite
/// fail the run.
fn checkpoint_if_due(st: &mut State, rep: &Reporter) -> Result<ControlFlow<TrainOutcome>> {
    let every = st.cfg.checkpoint_every;
    if !((every > 0 && st.step % every == 0) || st.step == st.cfg.schedule.steps) {
        return Ok(Continue(()));
    }
    checkpoint_if_finite(st, rep)?;
    if st.last_checkpoint_step != Some(st.step) {
        let msg = format!("non-finite weights at step {} (after its update)", st.step);
        return fail(st, rep, msg).map(Break);
    }
    Ok(Continue(()))
}

fn done(st: &mut State, rep: &Reporter) -> Result<TrainOutcome> {
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
