//! The other processes of a data-parallel training start from rank 0's state: rank 0 sets
//! the run up as a single process would (new run or resume, the run folder, its lock), then
//! puts in the rendezvous store what the others cannot read themselves (the run's folder and
//! config, the counters, the train stream's positions) and broadcasts its tensors (weights,
//! AdamW's moments, Muon's momentum). The others need no access to the run folder: on
//! another node it may not exist, and only their own log is written there.

use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::{new_muon, open_data, Start, StartPoint, State};
use crate::config::TrainConfig;
use crate::data::TrainStreamState;
use crate::dist::World;
use crate::model::Gpt;
use crate::runs::checkpoint::ValPoint;
use crate::runs::run_dir::RunDir;
use crate::train::{AdamW, Muon};

const SETUP_KEY: &str = "stacklab/setup";

/// What rank 0 tells the others after its setup (or why it failed).
#[derive(Serialize, Deserialize, Default)]
struct Shared {
    error: Option<String>,
    run: PathBuf,
    config_toml: String,
    step: i64,
    tokens_seen: i64,
    time_before: f64,
    frozen: bool,
    adamw_step: i64,
    last_checkpoint_step: Option<i64>,
    val_history: Vec<ValPoint>,
    train_data: TrainStreamState,
}

/// Every tensor the processes must share, in one order on every rank.
fn shared_tensors<'a>(model: &'a Gpt, adamw: Option<&'a AdamW>, muon: &'a Muon) -> Vec<&'a Tensor> {
    let mut out: Vec<&Tensor> = model
        .named_parameters()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    if let Some(a) = adamw {
        out.push(&a.exp_avg);
        out.push(&a.exp_avg_sq);
    }
    out.extend(muon.momentum.iter());
    out
}

fn broadcast(world: &World, model: &Gpt, adamw: Option<&AdamW>, muon: &Muon) -> Result<()> {
    let ts = shared_tensors(model, adamw, muon);
    if let Some(t) = ts.iter().find(|t| !t.is_contiguous()) {
        bail!(
            "a tensor of shape {:?} to share is not contiguous",
            t.size()
        );
    }
    tch::no_grad(|| world.broadcast(&ts, 0))
}

/// Rank 0, set up: tells the other processes the run and sends them its state.
pub fn share_state(st: &State) -> Result<()> {
    let Some(group) = st.world.group() else {
        return Ok(());
    };
    if st.model.custom_layout().is_some() && st.world.size > 1 {
        share_failure(&st.world, "the model has a custom block layout");
        bail!("a model with a custom block layout (from a stack) trains in one process only: leave out --nproc");
    }
    let shared = Shared {
        error: None,
        run: std::path::absolute(&st.run.path)?,
        config_toml: st.config_toml.clone(),
        step: st.step,
        tokens_seen: st.tokens_seen,
        time_before: st.time_before,
        frozen: st.from_model.is_some(),
        adamw_step: st.adamw.as_ref().map_or(0, |a| a.step),
        last_checkpoint_step: st.last_checkpoint_step,
        val_history: st.val_history.clone(),
        train_data: st.train.state(),
    };
    group.store_set(SETUP_KEY, &serde_json::to_vec(&shared)?)?;
    broadcast(&st.world, &st.model, st.adamw.as_ref(), &st.muon)
}

/// Rank 0's setup failed: the other processes are told why (and end), so none waits.
pub fn share_failure(world: &World, why: &str) {
    if let Some(g) = world.group() {
        let shared = Shared {
            error: Some(why.to_string()),
            ..Default::default()
        };
        if let Ok(bytes) = serde_json::to_vec(&shared) {
            let _ = g.store_set(SETUP_KEY, &bytes);
        }
    }
}

/// A rank other than 0: the state rank 0 set up, received through the store and broadcasts.
pub fn follower_state(world: &Rc<World>, device: Device) -> Result<State> {
    let group = world.group().context("a follower needs a process group")?;
    let shared: Shared =
        serde_json::from_slice(&group.store_get(SETUP_KEY)?).context("rank 0's setup message")?;
    if let Some(e) = shared.error {
        bail!("rank 0 could not set up the run: {e}");
    }
    let cfg = TrainConfig::from_toml_str(&shared.config_toml, "rank 0's config", &[])?;
    let (mut train, val, _) = open_data(&cfg)?;
    train
        .restore(&shared.train_data)
        .context("the train shards on this node differ from rank 0's")?;
    let mut model = Gpt::new(&cfg.model, cfg.seed, device);
    model.set_trainable(!shared.frozen);
    let mut adamw = (!shared.frozen).then(|| AdamW::new(&cfg.optimizer.adamw, &model.wte));
    if let Some(a) = adamw.as_mut() {
        a.step = shared.adamw_step;
    }
    let muon = new_muon(&cfg, &model, device);
    broadcast(world, &model, adamw.as_ref(), &muon)?;
    let run = RunDir::for_rank(&shared.run, world.rank);
    // The folder exists on rank 0's node; elsewhere this rank's log makes it.
    let _ = std::fs::create_dir_all(&run.path);
    // So the machine's figures name this process's GPU use with its run.
    if let Err(e) = crate::runs::process::record_rank(&run.path, world.rank) {
        tracing::warn!(
            "cannot record rank {} in {}: {e:#}",
            world.rank,
            run.path.display()
        );
    }
    run.log(&format!(
        "rank {} of {}: training with rank 0 from step {}",
        world.rank, world.size, shared.step
    ));
    let start = Start {
        model,
        adamw,
        muon,
        from_model: None,
        init_from: None,
        at: StartPoint {
            step: shared.step,
            tokens_seen: shared.tokens_seen,
            time_before: shared.time_before,
            val_history: shared.val_history,
            last_checkpoint_step: shared.last_checkpoint_step,
        },
    };
    let mut st = State::new(cfg, run, None, device, (train, val), start);
    st.world = Rc::clone(world);
    Ok(st)
}
