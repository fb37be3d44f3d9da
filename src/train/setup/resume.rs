//! A resumed run's state: the latest checkpoint's weights, optimizer state and data
//! positions, or a restart from step 0 when the run has no checkpoint yet.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::Device;

use super::fresh::{fresh_state, initial_model};
use super::{muon_kind, open_data, State};
use crate::config::TrainConfig;
use crate::model::Compute;
use crate::runs::checkpoint;
use crate::runs::run_dir::{RunDir, RunState};
use crate::runs::Checkpoint;
use crate::train::{AdamW, Muon};

pub fn resume_run(path: &Path, device: Device) -> Result<State> {
    if !RunDir::is_run_dir(path) {
        bail!(
            "--resume {}: not a run folder (expected {} and {})",
            path.display(),
            crate::runs::run_dir::CONFIG_FILE,
            crate::runs::run_dir::STATUS_FILE
        );
    }
    let run = RunDir::new(path);
    let prior = run.read_status()?;
    if prior.state == RunState::Running && prior.process_alive() && prior.pid != std::process::id()
    {
        bail!(
            "run {} is still running (pid {})",
            path.display(),
            prior.pid
        );
    }
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
        eprintln!("{msg}");
        run.log(&msg);
        run.truncate_metrics(-1)?;
        return fresh_state(cfg, init, data, run, device);
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
    let saved = if !meta.train_data.ranks.is_empty() {
        meta.train_data.clone()
    } else if let (Some(p), 1) = (&meta.data_position, cfg.batch.ranks) {
        crate::data::TrainStreamState {
            shard_order: Vec::new(),
            ranks: vec![p.clone()],
        }
    } else {
        bail!(
            "{}: the checkpoint has no per-rank data positions (written by an older stacklab); it can be resumed only with batch.ranks = 1",
            latest.display()
        );
    };
    train
        .restore(&saved)
        .with_context(|| format!("resuming {}", latest.display()))?;
    let compute = Compute::for_training(device, cfg.precision);
    let mut model = ckpt.load_model(device)?;
    model.set_trainable(!meta.wte_frozen);
    let opt = ckpt.load_optimizer(device)?;
    let adamw = match (meta.wte_frozen, opt.adamw) {
        (true, _) => None,
        (false, Some((m, v))) => {
            let mut a = AdamW::new(&cfg.optimizer.adamw, &model.wte);
            a.exp_avg = m;
            a.exp_avg_sq = v;
            a.step = meta.adamw_step;
            Some(a)
        }
        (false, None) => bail!(
            "{}: W trains but the checkpoint has no AdamW state",
            latest.display()
        ),
    };
    let mut muon = Muon::new(
        &cfg.optimizer.muon,
        &model.block_matrices(),
        muon_kind(compute),
    );
    let mut buffers = opt.muon;
    for (i, (name, p)) in model.block_named_parameters().iter().enumerate() {
        let b = buffers
            .remove(name)
            .with_context(|| format!("{}: no Muon momentum for {name}", latest.display()))?;
        if b.size() != p.size() {
            bail!(
                "{}: Muon momentum for {name} has the wrong shape",
                latest.display()
            );
        }
        muon.momentum[i] = b;
    }
    run.truncate_metrics(meta.step)?;
    run.log(&format!(
        "resuming from {} (step {})",
        latest.display(),
        meta.step
    ));
    let config_toml = cfg.to_toml_string();
    Ok(State {
        step: meta.step,
        tokens_seen: meta.tokens_seen,
        time_before: meta.train_time_s,
        val_history: meta.val_loss_history.clone(),
        from_model: meta.from_model.clone(),
        init_from: meta.init_from.clone(),
        last_checkpoint_step: Some(meta.step),
        cfg,
        run,
        device,
        compute,
        model,
        adamw,
        muon,
        train,
        val,
        started: Instant::now(),
        config_toml,
    })
}
