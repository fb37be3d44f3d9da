//! A resumed run's state: the latest checkpoint's weights, optimizer state and data
//! positions, or a restart from step 0 when the run has no checkpoint yet.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use super::fresh::{fresh_state, initial_model};
use super::{new_muon, open_data, Start, StartPoint, State};
use crate::config::TrainConfig;
use crate::data::TrainStreamState;
use crate::model::Gpt;
use crate::runs::checkpoint;
use crate::runs::checkpoint::CheckpointMeta;
use crate::runs::lock::{self, RunLock};
use crate::runs::run_dir::{RunDir, RunState};
use crate::runs::Checkpoint;
use crate::train::reporter::say;
use crate::train::{AdamW, Muon};

pub fn resume_run(path: &Path, device: Device) -> Result<State> {
    let run = RunDir::new(path);
    if !run.config_path().is_file() {
        bail!(
            "--resume {}: not a run folder (expected {})",
            path.display(),
            crate::runs::run_dir::CONFIG_FILE,
        );
    }
    // One writer per run: a run another process trains (or removes) is refused, by pid.
    let lock = lock::acquire(
        path,
        lock::TRAIN,
        Some(&crate::device::slots::training_label(device)),
    )
    .map_err(|e| match e.downcast_ref::<lock::Held>() {
        Some(held) => anyhow::anyhow!("cannot resume: {held}"),
        None => e,
    })?;
    let mut lock = Some(lock);
    let result = resume_locked(path, run, device, &mut lock);
    if let (Err(_), Some(l)) = (&result, lock) {
        // Refused: the folder is left as it was.
        l.discard();
    }
    result
}

/// The resume, with the run's lock held (`lock` is moved into the state at the end).
fn resume_locked(
    path: &Path,
    run: RunDir,
    device: Device,
    lock: &mut Option<RunLock>,
) -> Result<State> {
    check_not_running(path, &run)?;
    let mut cfg = TrainConfig::load(&run.config_path(), &[])?;
    checkpoint::remove_stale_temporaries(path);
    let Some(latest) = run.checkpoints().pop() else {
        // Stopped or killed before its first checkpoint: its config is all there is. The
        // run folder is touched only once the restart is known to work.
        let init = initial_model(&mut cfg, device)?;
        let data = open_data(&cfg)?;
        let msg = format!(
            "{} has no complete checkpoint yet: restarting it from step 0 with its saved config",
            path.display()
        );
        say(&msg);
        run.log(&msg);
        run.truncate_metrics(-1)?;
        let lock = lock.take().expect("held until the state owns it");
        return fresh_state(cfg, init, data, run, lock, device);
    };
    let ckpt = Checkpoint::open(&latest)?;
    let meta = &ckpt.meta;
    if meta.step >= cfg.schedule.steps {
        bail!(
            "run {} already finished: its last checkpoint is step {} of {}",
            path.display(),
            meta.step,
            cfg.schedule.steps
        );
    }
    let (mut train, val, _) = open_data(&cfg)?;
    train
        .restore(&saved_positions(&cfg, meta, &latest)?)
        .with_context(|| format!("resuming {}", latest.display()))?;
    let mut model = ckpt.load_model(device)?;
    model.set_trainable(!meta.wte_frozen);
    let opt = ckpt.load_optimizer(device)?;
    let opt_file = latest.join(checkpoint::OPTIMIZER_FILE);
    let adamw = restore_adamw(&cfg, meta, opt.adamw, &model, &opt_file)?;
    let muon = restore_muon(&cfg, opt.muon, &model, &opt_file, device)?;
    run.truncate_metrics(meta.step)?;
    run.log(&format!(
        "resuming from {} (step {})",
        latest.display(),
        meta.step
    ));
    let start = Start {
        model,
        adamw,
        muon,
        from_model: meta.from_model.clone(),
        init_from: meta.init_from.clone(),
        at: StartPoint {
            step: meta.step,
            tokens_seen: meta.tokens_seen,
            time_before: meta.train_time_s,
            val_history: meta.val_loss_history.clone(),
            last_checkpoint_step: Some(meta.step),
        },
    };
    let lock = lock.take().expect("held until the state owns it");
    Ok(State::new(
        cfg,
        run,
        Some(lock),
        device,
        (train, val),
        start,
    ))
}

/// Refuses a run whose status says another live process trains it; a run whose status is
/// lost is resumed from what it holds on disk.
fn check_not_running(path: &Path, run: &RunDir) -> Result<()> {
    match run.read_status() {
        Ok(prior) => {
            if prior.state == RunState::Running
                && prior.process_alive()
                && prior.pid != std::process::id()
            {
                bail!(
                    "run {} is still running (pid {})",
                    path.display(),
                    prior.pid
                );
            }
        }
        // Lost with its status: what the run holds on disk is all a resume needs.
        Err(e) => {
            let msg = format!("{e:#}: resuming it as a lost run");
            say(&msg);
            run.log(&msg);
        }
    }
    Ok(())
}

/// The train stream's positions saved in the checkpoint at `latest` (an older single-rank
/// position taken for one rank).
fn saved_positions(
    cfg: &TrainConfig,
    meta: &CheckpointMeta,
    latest: &Path,
) -> Result<TrainStreamState> {
    if !meta.train_data.ranks.is_empty() {
        Ok(meta.train_data.clone())
    } else if let (Some(p), 1) = (&meta.data_position, cfg.batch.ranks) {
        Ok(TrainStreamState {
            shard_order: Vec::new(),
            ranks: vec![p.clone()],
        })
    } else {
        bail!(
            "{}: the checkpoint has no per-rank data positions (written by an older stacklab); it can be resumed only with batch.ranks = 1",
            latest.display()
        );
    }
}

/// AdamW's saved moments and step for a `W` that trains (none for a frozen one).
fn restore_adamw(
    cfg: &TrainConfig,
    meta: &CheckpointMeta,
    saved: Option<(Tensor, Tensor)>,
    model: &Gpt,
    opt_file: &Path,
) -> Result<Option<AdamW>> {
    match (meta.wte_frozen, saved) {
        (true, _) => Ok(None),
        (false, Some((m, v))) => {
            for (name, t) in [("adamw.exp_avg", &m), ("adamw.exp_avg_sq", &v)] {
                check_shape(opt_file, name, t, &model.wte, "W")?;
            }
            let mut a = AdamW::new(&cfg.optimizer.adamw, &model.wte);
            a.exp_avg = m;
            a.exp_avg_sq = v;
            a.step = meta.adamw_step;
            Ok(Some(a))
        }
        (false, None) => bail!(
            "{}: W trains but the checkpoint has no AdamW state",
            opt_file.display()
        ),
    }
}

/// Muon with the saved momentum of every block parameter: one for each, none left over.
fn restore_muon(
    cfg: &TrainConfig,
    mut buffers: BTreeMap<String, Tensor>,
    model: &Gpt,
    opt_file: &Path,
    device: Device,
) -> Result<Muon> {
    let mut muon = new_muon(cfg, model, device);
    for (i, (name, p)) in model.block_named_parameters().iter().enumerate() {
        let b = buffers.remove(name).with_context(|| {
            format!(
                "{}: no tensor `muon.momentum.{name}` (Muon's momentum for {name})",
                opt_file.display()
            )
        })?;
        check_shape(opt_file, &format!("muon.momentum.{name}"), &b, p, name)?;
        muon.momentum[i] = b;
    }
    if let Some(name) = buffers.keys().next() {
        bail!(
            "{}: tensor `muon.momentum.{name}` is the momentum of a parameter this model does not have",
            opt_file.display()
        );
    }
    Ok(muon)
}

/// An optimizer tensor must have its parameter's shape.
fn check_shape(file: &Path, name: &str, t: &Tensor, param: &Tensor, what: &str) -> Result<()> {
    if t.size() != param.size() {
        bail!(
            "{}: tensor `{name}` has shape {:?}, expected {:?} (the shape of {what})",
            file.display(),
            t.size(),
            param.size()
        );
    }
    Ok(())
}
