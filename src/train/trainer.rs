//! The training loop. It writes everything a run produces into its run directory, so the
//! lab and scripts watch runs by reading files, and a run never depends on who started it.
//!
//! Per step: `accumulation_steps` micro-batches forward/backward (plus a latent pass each on
//! COCONUT-parallel steps), gradients averaged, AdamW on `W` (unless frozen) and Muon on the
//! block matrices with the schedule's factor, then metrics, validation and checkpoints.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::{coconut, lr_factor, AdamW, Muon};
use crate::config::{CoconutMode, TrainConfig};
use crate::data::{DataSource, ShardLoader};
use crate::eval::{check_vocab, evaluate};
use crate::model::weights::wte_hash;
use crate::model::{Compute, Gpt};
use crate::runs::checkpoint::{self, CheckpointMeta, Lineage, OptimizerTensors, ValPoint};
use crate::runs::run_dir::{MetricsRow, RunDir, RunState, RunStatus};
use crate::runs::{Checkpoint, CheckpointRef};

pub struct TrainOptions {
    /// A new run's config (ignored when resuming: the run's own config is used).
    pub config: Option<TrainConfig>,
    /// Name for a new run; default `<config name>-<date>-<time>`.
    pub name: Option<String>,
    /// The config's name, for the default run name.
    pub config_name: String,
    /// Continue this run directory from its latest checkpoint.
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint, status `stopped`) once this global step is done.
    pub stop_after: Option<i64>,
    pub device: Device,
    /// Where new run directories are created.
    pub runs_root: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainOutcome {
    Done,
    /// Stopped by `--stop-after` (false) or by SIGINT/SIGTERM (true).
    Stopped {
        by_signal: bool,
    },
    Failed(String),
}

/// Everything the loop mutates.
struct State {
    cfg: TrainConfig,
    run: RunDir,
    device: Device,
    compute: Compute,
    model: Gpt,
    adamw: Option<AdamW>,
    muon: Muon,
    train: ShardLoader,
    val: ShardLoader,
    step: i64,
    tokens_seen: i64,
    time_before: f64,
    started: Instant,
    val_history: Vec<ValPoint>,
    from_model: Option<Lineage>,
    config_toml: String,
    last_checkpoint_step: Option<i64>,
}

fn valid_run_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains('/')
        || name.contains('\\')
        || name.chars().any(|c| c.is_control())
    {
        bail!("run name `{name}` is not usable as a folder name (no '/', no leading '.')");
    }
    Ok(())
}

fn status(st: &State, state: RunState, message: &str) -> Result<()> {
    st.run.write_status(&RunStatus {
        state,
        pid: std::process::id(),
        step: st.step,
        total_steps: st.cfg.schedule.steps,
        message: message.to_string(),
        updated_at: chrono::Local::now().to_rfc3339(),
    })
}

fn block_params(model: &Gpt) -> Vec<(String, &Tensor)> {
    model.named_parameters().into_iter().skip(1).collect()
}

/// Newton-Schulz's dtype for a training compute mode (bf16 on CUDA, fp32 on the CPU).
pub fn muon_kind(compute: Compute) -> Kind {
    match compute {
        Compute::Bf16 => Kind::BFloat16,
        Compute::Fp32 => Kind::Float,
    }
}

fn open_loaders(cfg: &TrainConfig) -> Result<(ShardLoader, ShardLoader, DataSource)> {
    let source = DataSource::from_config(&cfg.data)?;
    let t = cfg.model.seq_len as usize;
    // The train loader reads a step's whole global batch at once (the seed's rule for moving
    // to the next shard works on that window); validation reads micro-batches.
    let step_b = (cfg.batch.global_batch / cfg.batch.devices) as usize;
    let train = ShardLoader::from_glob(&source.train, step_b, t).context("data.train")?;
    let val = ShardLoader::from_glob(&source.val, cfg.batch.micro_batch as usize, t)
        .context("data.val")?;
    Ok((train, val, source))
}

fn new_run(opts: &TrainOptions) -> Result<State> {
    let cfg = opts.config.clone().context("a new run needs a config")?;
    if cfg.batch.devices != 1 {
        bail!(
            "batch.devices = {}: training on several devices is not supported yet; set batch.devices = 1 (one device reproduces the global batch by accumulation)",
            cfg.batch.devices
        );
    }
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => format!(
            "{}-{}",
            opts.config_name,
            chrono::Local::now().format("%Y%m%d-%H%M%S")
        ),
    };
    valid_run_name(&name)?;
    let path = opts.runs_root.join(&name);
    if path.exists() {
        bail!(
            "run `{name}` already exists at {}: choose another --name, or continue it with --resume {}",
            path.display(),
            path.display()
        );
    }
    let (train, val, source) = open_loaders(&cfg)?;
    let compute = Compute::for_training(opts.device, cfg.precision);
    let mut model = Gpt::new(&cfg.model, cfg.seed, opts.device);
    let mut from_model = None;
    if !cfg.from_model.is_empty() {
        let parent_ref = CheckpointRef::resolve(&cfg.from_model).context("from_model")?;
        let parent_wte = parent_ref.load_wte(opts.device).context("from_model")?;
        let (pv, pc) = (parent_wte.size()[0], parent_wte.size()[1]);
        if (pv, pc) != (cfg.model.vocab_size, cfg.model.n_embd) {
            bail!(
                "from_model `{}`: its W is {pv} x {pc}, but this config has model.vocab_size = {} and model.n_embd = {}",
                cfg.from_model,
                cfg.model.vocab_size,
                cfg.model.n_embd
            );
        }
        from_model = Some(Lineage {
            name: parent_ref.name(),
            wte_sha256: wte_hash(&parent_wte),
        });
        model.wte = parent_wte;
    }
    let frozen = from_model.is_some();
    model.set_trainable(!frozen);
    let adamw = (!frozen).then(|| AdamW::new(&cfg.optimizer.adamw, &model.wte));
    let params: Vec<&Tensor> = block_params(&model).into_iter().map(|(_, t)| t).collect();
    let muon = Muon::new(&cfg.optimizer.muon, &params, muon_kind(compute));

    std::fs::create_dir_all(&path)
        .with_context(|| format!("cannot create run folder {}", path.display()))?;
    let run = RunDir::new(&path);
    let config_toml = cfg.to_toml_string();
    crate::paths::write_atomic(&run.config_path(), config_toml.as_bytes())?;
    run.write_status(&RunStatus {
        state: RunState::Running,
        pid: std::process::id(),
        step: 0,
        total_steps: cfg.schedule.steps,
        message: "starting".into(),
        updated_at: chrono::Local::now().to_rfc3339(),
    })?;
    run.log(&format!("new run `{name}`: data {}", source.description));
    if let Some(l) = &from_model {
        run.log(&format!(
            "W copied from {} (sha256 {}) and frozen",
            l.name, l.wte_sha256
        ));
    }
    Ok(State {
        cfg,
        run,
        device: opts.device,
        compute,
        model,
        adamw,
        muon,
        train,
        val,
        step: 0,
        tokens_seen: 0,
        time_before: 0.0,
        started: Instant::now(),
        val_history: Vec::new(),
        from_model,
        config_toml,
        last_checkpoint_step: None,
    })
}

fn resume_run(path: &Path, device: Device) -> Result<State> {
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
    let cfg = TrainConfig::load(&run.config_path(), &[])?;
    checkpoint::remove_stale_temporaries(path);
    let latest = run.checkpoints().pop().with_context(|| {
        format!(
            "--resume {}: the run has no complete checkpoint to resume from",
            path.display()
        )
    })?;
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
    let (mut train, val, _) = open_loaders(&cfg)?;
    train.restore(&meta.data_position)?;
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
    let named = block_params(&model);
    let params: Vec<&Tensor> = named.iter().map(|(_, t)| *t).collect();
    let mut muon = Muon::new(&cfg.optimizer.muon, &params, muon_kind(compute));
    let mut buffers = opt.muon;
    for (i, (name, p)) in named.iter().enumerate() {
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

fn elapsed(st: &State) -> f64 {
    st.time_before + st.started.elapsed().as_secs_f64()
}

fn weights_finite(model: &Gpt) -> bool {
    tch::no_grad(|| {
        model
            .named_parameters()
            .iter()
            .all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1)
    })
}

fn write_checkpoint(st: &mut State) -> Result<PathBuf> {
    let mut muon = BTreeMap::new();
    for (i, (name, _)) in block_params(&st.model).into_iter().enumerate() {
        muon.insert(name, st.muon.momentum[i].shallow_clone());
    }
    let opt = OptimizerTensors {
        adamw: st
            .adamw
            .as_ref()
            .map(|a| (a.exp_avg.shallow_clone(), a.exp_avg_sq.shallow_clone())),
        muon,
    };
    let meta = CheckpointMeta {
        name: format!(
            "{}/{}",
            st.run.name(),
            checkpoint::checkpoint_dir_name(st.step)
        ),
        step: st.step,
        total_steps: st.cfg.schedule.steps,
        tokens_seen: st.tokens_seen,
        seed: st.cfg.seed,
        train_time_s: elapsed(st),
        device: crate::device::describe(st.device),
        stacklab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("STACKLAB_GIT_COMMIT").into(),
        created_at: chrono::Local::now().to_rfc3339(),
        wte_sha256: wte_hash(&st.model.wte),
        wte_frozen: st.from_model.is_some(),
        val_tokens: st.cfg.eval.val_tokens,
        model: st.cfg.model.clone(),
        data_position: st.train.state(),
        adamw_step: st.adamw.as_ref().map(|a| a.step).unwrap_or(0),
        from_model: st.from_model.clone(),
        val_loss_history: st.val_history.clone(),
    };
    let p = checkpoint::write_checkpoint(&st.run.path, &st.model, &opt, &meta, &st.config_toml)?;
    st.last_checkpoint_step = Some(st.step);
    st.run.log(&format!("checkpoint {}", p.display()));
    Ok(p)
}

fn optimizer_step(st: &mut State, factor: f64, accum: i64) {
    apply_optimizers(&st.model, st.adamw.as_mut(), &mut st.muon, factor, accum);
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
    let named = block_params(model);
    let params: Vec<&Tensor> = named.iter().map(|(_, t)| *t).collect();
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

/// The block matrices in Muon's order.
pub fn muon_params(model: &Gpt) -> Vec<&Tensor> {
    block_params(model).into_iter().map(|(_, t)| t).collect()
}

fn validate(st: &mut State) -> Result<f64> {
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

/// Progress on a terminal (a bar) or as plain lines.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    log_every: i64,
    ema_step_s: Option<f64>,
}

impl Reporter {
    fn new(total: i64, start: i64, log_every: i64) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .expect("valid progress template"),
            );
            b.set_position(start as u64);
            b
        });
        Reporter {
            bar,
            log_every: log_every.max(1),
            ema_step_s: None,
        }
    }

    fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn step(&mut self, row: &MetricsRow, total: i64, step_s: f64, first_of_session: bool) {
        // The first step of a session pays for warm-up (allocations, kernels): keep it out of the ETA.
        if !first_of_session {
            self.ema_step_s = Some(match self.ema_step_s {
                Some(e) => 0.9 * e + 0.1 * step_s,
                None => step_s,
            });
        }
        let eta = self
            .ema_step_s
            .map(|s| format_duration(s * (total - row.step) as f64))
            .unwrap_or_else(|| "-".into());
        let mut msg = format!(
            "loss {:.4} | {:.0} tok/s | eta {eta}",
            row.train_loss.unwrap_or(f64::NAN),
            row.tokens_per_s.unwrap_or(0.0)
        );
        if let Some(l) = row.latent_loss {
            msg = format!("{msg} | latent {l:.4}");
        }
        match &self.bar {
            Some(b) => {
                b.set_position(row.step as u64);
                b.set_message(msg);
            }
            None => {
                if row.step % self.log_every == 0 || row.step == total {
                    eprintln!("step {}/{total} | {msg}", row.step);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as i64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn install_signal_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled ends the process at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Runs (or resumes) a training run to its end, a stop, or a failure.
pub fn train(opts: &TrainOptions) -> Result<(PathBuf, TrainOutcome)> {
    if opts.stop_after.is_some_and(|s| s < 1) {
        bail!("--stop-after must be a step of at least 1");
    }
    let stop = install_signal_flag()?;
    let mut st = match &opts.resume {
        Some(p) => resume_run(p, opts.device)?,
        None => new_run(opts)?,
    };
    if let Some(s) = opts.stop_after {
        if s <= st.step {
            bail!("--stop-after {s}: the run is already at step {}", st.step);
        }
    }
    let run_path = st.run.path.clone();
    let outcome = match run_loop(&mut st, opts, &stop) {
        Ok(o) => o,
        Err(e) => {
            let msg = format!("{e:#}");
            st.run.log(&format!("failed: {msg}"));
            let _ = status(&st, RunState::Failed, &msg);
            return Err(e);
        }
    };
    Ok((run_path, outcome))
}

fn run_loop(st: &mut State, opts: &TrainOptions, stop: &AtomicBool) -> Result<TrainOutcome> {
    let total = st.cfg.schedule.steps;
    let accum = st.cfg.batch.accumulation_steps();
    let tokens_per_step = st.cfg.tokens_per_step();
    let (warmup, warmdown) = (st.cfg.schedule.warmup, st.cfg.schedule.warmdown);
    let val_every = st.cfg.eval.val_every;
    let ckpt_every = st.cfg.checkpoint_every;
    st.run.log(&format!(
        "device {} | {} parameters | compute {:?} | {} x {} accumulation | steps {}..{total}",
        crate::device::describe(st.device),
        st.model.num_parameters(),
        st.compute,
        accum,
        st.cfg.batch.micro_batch,
        st.step
    ));
    status(
        st,
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
            elapsed_s: elapsed(st),
            ..Default::default()
        })?;
        rep.line(&format!("step 0 val_loss {v:.4}"));
    }

    let mut first = true;
    while st.step < total {
        if stop.load(Ordering::SeqCst) {
            return stopped(st, &rep, true);
        }
        let t0 = Instant::now();
        let every = st.cfg.coconut.every;
        let coconut = every > 0 && (st.step + 1) % every == 0;
        let factor = lr_factor(st.step, total, warmup, warmdown);
        // One window of the step's whole global batch, as the seed's ranks together read it;
        // micro-batch k is its k-th slice of rows (rank k's batch in the seed).
        let window = st.train.next_batch()?;
        check_vocab(window.max_token(), st.model.cfg.vocab_size, &st.train)?;
        let next_window = if coconut && st.cfg.coconut.mode == CoconutMode::Seed {
            // The seed loads the next batch between the two passes: its targets score the latents.
            let w = st.train.peek_batch()?;
            check_vocab(w.max_token(), st.model.cfg.vocab_size, &st.train)?;
            Some(w)
        } else {
            None
        };
        let mb = st.cfg.batch.micro_batch as usize;
        // Losses stay on the device until the step ends: one synchronisation per step.
        let mut losses = Vec::with_capacity(accum as usize);
        let mut latents = Vec::new();
        for k in 0..accum as usize {
            let (x, y) = window.rows(k * mb, mb).tensors(st.device);
            let next_y = next_window
                .as_ref()
                .map(|w| w.rows(k * mb, mb).tensors(st.device).1);
            let (l, latent) = coconut::forward_backward(
                &st.model,
                &x,
                &y,
                next_y.as_ref(),
                coconut.then_some(&st.cfg.coconut),
                st.compute,
            );
            losses.push(l);
            latents.extend(latent);
        }
        let mean = |v: &[Tensor]| Tensor::stack(v, 0).mean(Kind::Float).double_value(&[]);
        let train_loss = mean(&losses);
        let latent_loss = (!latents.is_empty()).then(|| mean(&latents));
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
        optimizer_step(st, factor, accum);
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
        row.elapsed_s = elapsed(st);
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
        status(
            st,
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
    status(st, RunState::Done, &msg)?;
    rep.line(&msg);
    Ok(TrainOutcome::Done)
}

fn checkpoint_if_finite(st: &mut State, rep: &Reporter) -> Result<()> {
    if !weights_finite(&st.model) {
        return Ok(());
    }
    let p = write_checkpoint(st)?;
    rep.line(&format!("checkpoint {}", p.display()));
    Ok(())
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
    status(st, RunState::Stopped, &msg)?;
    rep.line(&msg);
    Ok(TrainOutcome::Stopped { by_signal })
}

fn fail(st: &mut State, rep: &Reporter, msg: String) -> Result<TrainOutcome> {
    rep.finish();
    let last = st
        .last_checkpoint_step
        .map(|s| format!("; the last good checkpoint is step {s}"))
        .unwrap_or_else(|| "; no checkpoint was written".into());
    let full = format!("{msg}{last}");
    st.run.log(&format!("failed: {full}"));
    status(st, RunState::Failed, &full)?;
    rep.line(&format!("failed: {full}"));
    Ok(TrainOutcome::Failed(full))
}
