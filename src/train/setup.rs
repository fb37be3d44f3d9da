//! Everything a training loop needs, built and checked before the first step: the data
//! (per-rank train streams, val loader), the model (fresh, `init_from`, `W` from
//! `from_model`), the optimizers, and the run directory. A new run is checked completely
//! before its folder is created, so a refused config leaves nothing on disk.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind};

use super::{AdamW, Muon};
use crate::config::{ConfigError, TrainConfig};
use crate::data::{expand_glob, ordered_shards, DataSource, ShardLoader, TrainStream};
use crate::model::weights::{wte_hash, SeedOptions};
use crate::model::{Compute, Gpt};
use crate::runs::checkpoint::{self, InitLineage, Lineage, ValPoint};
use crate::runs::run_dir::{RunDir, RunState, RunStatus};
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

/// Everything the loop mutates.
pub struct State {
    pub cfg: TrainConfig,
    pub run: RunDir,
    pub device: Device,
    pub compute: Compute,
    pub model: Gpt,
    pub adamw: Option<AdamW>,
    pub muon: Muon,
    pub train: TrainStream,
    pub val: ShardLoader,
    pub step: i64,
    pub tokens_seen: i64,
    pub time_before: f64,
    pub started: Instant,
    pub val_history: Vec<ValPoint>,
    pub from_model: Option<Lineage>,
    pub init_from: Option<InitLineage>,
    pub config_toml: String,
    pub last_checkpoint_step: Option<i64>,
}

impl State {
    pub fn elapsed(&self) -> f64 {
        self.time_before + self.started.elapsed().as_secs_f64()
    }

    pub fn status(&self, state: RunState, message: &str) -> Result<()> {
        self.run.write_status(&RunStatus {
            state,
            pid: std::process::id(),
            step: self.step,
            total_steps: self.cfg.schedule.steps,
            message: message.to_string(),
            updated_at: chrono::Local::now().to_rfc3339(),
            start_time: crate::runs::process::own_start_time(),
            device: Some(crate::device::name(self.device)),
        })
    }
}

/// Newton-Schulz's dtype for a training compute mode (bf16 on CUDA, fp32 on the CPU).
pub fn muon_kind(compute: Compute) -> Kind {
    match compute {
        Compute::Bf16 => Kind::BFloat16,
        Compute::Fp32 => Kind::Float,
    }
}

fn config_err(key: &str, message: String) -> anyhow::Error {
    ConfigError {
        source: "config".into(),
        key: key.into(),
        message,
    }
    .into()
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

/// The train stream (per-rank, in the configured shard order) and the val loader, with
/// `eval.val_tokens` checked against what the val shards hold.
pub fn open_data(cfg: &TrainConfig) -> Result<(TrainStream, ShardLoader, DataSource)> {
    let source = DataSource::from_config(&cfg.data)?;
    let t = cfg.model.seq_len as usize;
    let b = cfg.batch.micro_batch as usize;
    let files = expand_glob(&source.train).context("data.train")?;
    let files = ordered_shards(files, cfg.data.shard_order, cfg.seed);
    let train = TrainStream::new(
        files,
        b,
        t,
        cfg.batch.ranks as usize,
        cfg.batch.per_rank_micro_batches() as usize,
    )
    .context("data.train")?;
    let val = ShardLoader::from_glob(&source.val, b, t).context("data.val")?;
    let sequences = (cfg.eval.val_tokens / cfg.model.seq_len) as usize;
    if !val.fits_from_start(sequences) {
        return Err(config_err(
            "eval.val_tokens",
            format!(
                "{} tokens is more than the val shards ({}) hold in {}-token sequences read {} at a time: at most {} tokens",
                cfg.eval.val_tokens,
                source.val,
                t,
                b,
                val.max_sequences_from_start() * t
            ),
        ));
    }
    Ok((train, val, source))
}

/// The model a new run starts from: fresh, or `init_from`'s weights (shape adopted from the
/// checkpoint, norms from the config), then `W` from `from_model`, frozen.
struct Initial {
    model: Gpt,
    from_model: Option<Lineage>,
    init_from: Option<InitLineage>,
    notes: Vec<String>,
}

fn initial_model(cfg: &mut TrainConfig, device: Device) -> Result<Initial> {
    let mut notes = Vec::new();
    let (mut model, init_from) = if cfg.init_from.is_empty() {
        (Gpt::new(&cfg.model, cfg.seed, device), None)
    } else {
        let r = CheckpointRef::resolve(&cfg.init_from).context("init_from")?;
        let opts = SeedOptions {
            n_head: Some(cfg.model.n_head),
            norm_wte: Some(cfg.model.norm_wte),
            norm_lm_head: Some(cfg.model.norm_lm_head),
            seq_len: Some(cfg.model.seq_len),
        };
        let m = r
            .load_model(&opts, device)
            .with_context(|| format!("init_from `{}`", cfg.init_from))?;
        let m_cfg = &m.cfg;
        for (key, was, now) in [
            ("model.vocab_size", cfg.model.vocab_size, m_cfg.vocab_size),
            ("model.n_embd", cfg.model.n_embd, m_cfg.n_embd),
            ("model.n_layer", cfg.model.n_layer, m_cfg.n_layer),
            ("model.n_head", cfg.model.n_head, m_cfg.n_head),
        ] {
            if was != now {
                notes.push(format!(
                    "{key} = {now} from init_from `{}` (the config said {was})",
                    cfg.init_from
                ));
            }
        }
        cfg.model.vocab_size = m_cfg.vocab_size;
        cfg.model.n_embd = m_cfg.n_embd;
        cfg.model.n_layer = m_cfg.n_layer;
        cfg.model.n_head = m_cfg.n_head;
        let lineage = InitLineage {
            name: r.name(),
            sha256: r.sha256()?,
        };
        (m, Some(lineage))
    };
    let mut from_model = None;
    if !cfg.from_model.is_empty() {
        let parent_ref = CheckpointRef::resolve(&cfg.from_model).context("from_model")?;
        let parent_wte = parent_ref.load_wte(device).context("from_model")?;
        let (pv, pc) = (parent_wte.size()[0], parent_wte.size()[1]);
        if (pv, pc) != (cfg.model.vocab_size, cfg.model.n_embd) {
            return Err(config_err(
                "from_model",
                format!(
                    "`{}` has a {pv} x {pc} W, but this model has model.vocab_size = {} and model.n_embd = {}",
                    cfg.from_model, cfg.model.vocab_size, cfg.model.n_embd
                ),
            ));
        }
        if let CheckpointRef::Native(p) = &parent_ref {
            if p.meta.seed == cfg.seed {
                notes.push(format!(
                    "warning: from_model `{}` was trained with seed = {} too: the blocks start identical to its blocks and the train shards are read in the same order, which is rarely what a stacking experiment wants (set seed to another value)",
                    cfg.from_model, cfg.seed
                ));
            }
        }
        if init_from.is_some() && !model.wte.equal(&parent_wte) {
            notes.push(format!(
                "W comes from from_model `{}` (frozen), not from init_from `{}`",
                cfg.from_model, cfg.init_from
            ));
        }
        from_model = Some(Lineage {
            name: parent_ref.name(),
            wte_sha256: wte_hash(&parent_wte),
        });
        model.wte = parent_wte;
    }
    model.cfg = cfg.model.clone();
    Ok(Initial {
        model,
        from_model,
        init_from,
        notes,
    })
}

/// A state at step 0 for `cfg` in `run` (a new run, or one restarted before its first
/// checkpoint).
fn fresh_state(
    cfg: TrainConfig,
    init: Initial,
    data: (TrainStream, ShardLoader, DataSource),
    run: RunDir,
    device: Device,
) -> Result<State> {
    let (train, val, source) = data;
    let compute = Compute::for_training(device, cfg.precision);
    let mut model = init.model;
    let frozen = init.from_model.is_some();
    model.set_trainable(!frozen);
    let adamw = (!frozen).then(|| AdamW::new(&cfg.optimizer.adamw, &model.wte));
    let muon = Muon::new(
        &cfg.optimizer.muon,
        &model.block_matrices(),
        muon_kind(compute),
    );
    run.log(&format!(
        "data {} | train shards in {} order: {}",
        source.description,
        cfg.data.shard_order.as_str(),
        train.state().shard_order.join(", ")
    ));
    for n in &init.notes {
        run.log(n);
        eprintln!("{n}");
    }
    if let Some(l) = &init.from_model {
        run.log(&format!(
            "W copied from {} (sha256 {}) and frozen",
            l.name, l.wte_sha256
        ));
    }
    if let Some(l) = &init.init_from {
        run.log(&format!(
            "weights start from {} (sha256 {})",
            l.name, l.sha256
        ));
    }
    let config_toml = cfg.to_toml_string();
    Ok(State {
        cfg,
        run,
        device,
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
        from_model: init.from_model,
        init_from: init.init_from,
        config_toml,
        last_checkpoint_step: None,
    })
}

pub fn new_run(opts: &TrainOptions) -> Result<State> {
    let mut cfg = opts.config.clone().context("a new run needs a config")?;
    if cfg.batch.devices != 1 {
        return Err(config_err(
            "batch.devices",
            format!("{}: training on several devices is not supported yet; set batch.devices = 1 (one device reproduces the global batch by accumulation, batch.ranks emulates the seed's ranks' data)", cfg.batch.devices),
        ));
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
    // Everything that can refuse the run happens before its folder exists.
    let init = initial_model(&mut cfg, opts.device)?;
    let data = open_data(&cfg)?;
    std::fs::create_dir_all(&path)
        .with_context(|| format!("cannot create run folder {}", path.display()))?;
    let run = RunDir::new(&path);
    crate::paths::write_atomic(&run.config_path(), cfg.to_toml_string().as_bytes())?;
    run.log(&format!("new run `{name}`"));
    let st = fresh_state(cfg, init, data, run, opts.device)?;
    st.status(RunState::Running, "starting")?;
    Ok(st)
}

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

/// Whether every weight is finite (a run that diverged is not checkpointed).
pub fn weights_finite(model: &Gpt) -> bool {
    tch::no_grad(|| {
        model
            .named_parameters()
            .iter()
            .all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1)
    })
}
