//! A training in several processes (data parallelism on c10d): the checks made before
//! anything starts, the state every process starts from, and the values they agree on.
//!
//! The seed's ranks stay logical: `batch.ranks` is split over the processes (process p runs
//! the ranks r with r mod world = p), so the data order and the math are those of one
//! process; only float summation order can differ.

use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::setup::{follower_state, new_run, resume_run, share_failure, share_state, State};
use super::TrainOptions;
use crate::config::TrainConfig;
use crate::dist::{GradBuckets, ReduceOp, World, BUCKET_BYTES};

/// Refuses a world size that does not divide `batch.ranks` (naming the variable or flag
/// that set it), before anything starts.
pub fn check_world_size(world: usize, ranks: i64, set_by: &str) -> Result<()> {
    if world == 0 || ranks % world as i64 != 0 {
        bail!(
            "{set_by} = {world} does not divide batch.ranks = {ranks}: each process runs whole logical ranks (process p the ranks r with r mod {world} = p), so the data and the math stay those of one process; use a world size that divides {ranks}"
        );
    }
    Ok(())
}

/// The variable that set this world's size, for messages.
pub fn world_size_source(world: &World) -> &'static str {
    match world.launch.as_ref().map(|l| l.launcher) {
        Some("srun") => "SLURM_NTASKS",
        Some("train --nproc") => "--nproc",
        _ => "WORLD_SIZE",
    }
}

/// The config a training will use: the new run's, or the resumed run's own.
fn planned_config<'a>(
    opts: &'a TrainOptions,
    owned: &'a mut Option<TrainConfig>,
) -> Result<&'a TrainConfig> {
    if let Some(p) = &opts.resume {
        let path = Path::new(p).join(crate::runs::run_dir::CONFIG_FILE);
        if path.is_file() {
            *owned = Some(TrainConfig::load(&path, &[])?);
        }
    }
    match (owned.as_ref(), opts.config.as_ref()) {
        (Some(c), _) | (None, Some(c)) => Ok(c),
        (None, None) => bail!("a new run needs a config"),
    }
}

/// The state this process trains from: rank 0 sets the run up (new or resumed) and shares
/// it; the other ranks receive it. A world that does not divide `batch.ranks` is refused
/// by every process alike.
pub fn setup(opts: &TrainOptions) -> Result<State> {
    let world = &opts.world;
    if world.size > 1 || world.group().is_some() {
        let mut owned = None;
        if let Ok(cfg) = planned_config(opts, &mut owned) {
            let checked = check_world_size(world.size, cfg.batch.ranks, world_size_source(world));
            if let Err(e) = checked {
                share_failure(world, &format!("{e:#}"));
                return Err(e);
            }
        }
    }
    if !world.is_main() {
        return follower_state(world, opts.device);
    }
    let st = match &opts.resume {
        Some(p) => resume_run(p, opts.device),
        None => new_run(opts),
    };
    let mut st = match st {
        Ok(st) => st,
        Err(e) => {
            share_failure(world, &format!("{e:#}"));
            return Err(e);
        }
    };
    st.world = Rc::clone(world);
    share_state(&st)?;
    Ok(st)
}

/// The gradient buckets of a training in a process group (none alone), started by the
/// step's last backward pass as its gradients come in (with `overlap`; else after it). A group of one (torchrun with one
/// process) has them too: the same path as several, through the group's backend.
pub fn buckets(st: &State, overlap: bool) -> Result<Option<GradBuckets>> {
    let Some(group) = st.world.group() else {
        return Ok(None);
    };
    let params = super::step::trained_parameters(&st.model, st.adamw.is_some());
    GradBuckets::new(group, &params, BUCKET_BYTES, overlap).map(Some)
}

/// `v` summed over the processes (itself alone).
pub fn sum_f64(world: &World, device: Device, v: f64) -> Result<f64> {
    if world.size == 1 {
        return Ok(v);
    }
    let t = Tensor::from_slice(&[v])
        .to_kind(Kind::Double)
        .to_device(device);
    world.all_reduce(&[&t], ReduceOp::Sum)?;
    Ok(t.double_value(&[0]))
}
