//! A new run's state: the initial model (fresh, `init_from`'s weights, `from_model`'s `W`),
//! the state at step 0, and the checks made before the run folder is created.

use anyhow::{Context, Result};
use tch::Device;

use super::{config_err, new_muon, open_data, Start, StartPoint, State, TrainOptions};
use crate::config::TrainConfig;
use crate::data::{DataSource, ShardLoader, TrainStream};
use crate::model::weights::{wte_hash, SeedOptions};
use crate::model::Gpt;
use crate::runs::checkpoint::{InitLineage, Lineage};
use crate::runs::lock::RunLock;
use crate::runs::run_dir::{check_run_name, RunDir, RunState};
use crate::runs::CheckpointRef;
use crate::train::AdamW;

/// The model a new run starts from: fresh, or `init_from`'s weights (shape adopted from the
/// checkpoint, norms from the config), then `W` from `from_model`, frozen.
pub(super) struct Initial {
    model: Gpt,
    from_model: Option<Lineage>,
    init_from: Option<InitLineage>,
    notes: Vec<String>,
}

pub(super) fn initial_model(cfg: &mut TrainConfig, device: Device) -> Result<Initial> {
    let mut notes = Vec::new();
    let (mut model, init_from) = if cfg.init_from.is_empty() {
        (Gpt::new(&cfg.model, cfg.seed, device), None)
    } else {
        let (m, lineage) = load_init_from(cfg, device, &mut notes)?;
        (m, Some(lineage))
    };
    let from_model = if cfg.from_model.is_empty() {
        None
    } else {
        Some(take_from_model(
            cfg,
            &mut model,
            init_from.is_some(),
            device,
            &mut notes,
        )?)
    };
    model.cfg = cfg.model.clone();
    Ok(Initial {
        model,
        from_model,
        init_from,
        notes,
    })
}

/// `init_from`'s weights; its shape replaces the config's (each change noted).
fn load_init_from(
    cfg: &mut TrainConfig,
    device: Device,
    notes: &mut Vec<String>,
) -> Result<(Gpt, InitLineage)> {
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
    Ok((m, lineage))
}

/// Puts `from_model`'s `W` into `model` after checking it fits; what it came from.
fn take_from_model(
    cfg: &TrainConfig,
    model: &mut Gpt,
    has_init_from: bool,
    device: Device,
    notes: &mut Vec<String>,
) -> Result<Lineage> {
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
    if has_init_from && !model.wte.equal(&parent_wte) {
        notes.push(format!(
            "W comes from from_model `{}` (frozen), not from init_from `{}`",
            cfg.from_model, cfg.init_from
        ));
    }
    let lineage = Lineage {
        name: parent_ref.name(),
        wte_sha256: wte_hash(&parent_wte),
    };
    model.wte = parent_wte;
    Ok(lineage)
}

/// A state at step 0 for `cfg` in `run` (a new run, or one restarted before its first
/// checkpoint).
pub(super) fn fresh_state(
    cfg: TrainConfig,
    init: Initial,
    data: (TrainStream, ShardLoader, DataSource),
    run: RunDir,
    lock: RunLock,
    device: Device,
) -> Result<State> {
    let (train, val, source) = data;
    let mut model = init.model;
    let frozen = init.from_model.is_some();
    model.set_trainable(!frozen);
    let adamw = (!frozen).then(|| AdamW::new(&cfg.optimizer.adamw, &model.wte));
    let muon = new_muon(&cfg, &model, device);
    run.log(&format!(
        "data {} | train shards in {} order: {}",
        source.description,
        cfg.data.shard_order.as_str(),
        train.state().shard_order.join(", ")
    ));
    for n in &init.notes {
        run.log(n);
        crate::train::reporter::say(n);
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
    let start = Start {
        model,
        adamw,
        muon,
        from_model: init.from_model,
        init_from: init.init_from,
        at: StartPoint::default(),
    };
    Ok(State::new(
        cfg,
        run,
        Some(lock),
        device,
        (train, val),
        start,
    ))
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
    check_run_name(&name)?;
    let path = opts.runs_root.join(&name);
    // The folder is created and locked first, so two starts of one name never both train;
    // everything that can refuse the run comes next, and a refusal removes the folder.
    let lock = super::claim::claim(
        &path,
        &name,
        &crate::device::slots::training_label(opts.device),
    )?;
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let init = initial_model(&mut cfg, opts.device)?;
        let data = open_data(&cfg)?;
        anyhow::Ok((init, data))
    }));
    let (init, data) = match checked {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            super::claim::release_failed(&path, lock);
            return Err(e);
        }
        Err(panic) => {
            super::claim::release_failed(&path, lock);
            let text = crate::train::faults::payload_text(panic.as_ref());
            anyhow::bail!(
                "{}",
                crate::train::faults::describe_panic(&text, Default::default(), &cfg)
            );
        }
    };
    let run = RunDir::new(&path);
    crate::paths::write_atomic(&run.config_path(), cfg.to_toml_string().as_bytes())?;
    run.log(&format!("new run `{name}`"));
    let st = fresh_state(cfg, init, data, run, lock, opts.device)?;
    st.status(RunState::Running, "starting")?;
    Ok(st)
}
