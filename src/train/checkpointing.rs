//! A training state into a checkpoint folder (see `runs::checkpoint` for the format and its
//! crash safety): the weights, the optimizer state, and the metadata a resume needs. Once a
//! checkpoint is complete, the run's retention (`checkpoint_keep_last`,
//! `checkpoint_keep_every`) removes older ones (see `runs::retention`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;

use super::reporter::Reporter;
use super::setup::{weights_finite, State};
use crate::model::weights::wte_hash;
use crate::runs::checkpoint::{self, CheckpointMeta, OptimizerTensors};
use crate::runs::disk::format_size;
use crate::runs::retention::{self, Lineages, Retention};

pub fn write_checkpoint(st: &mut State) -> Result<PathBuf> {
    st.stage = crate::train::faults::Stage::Checkpoint { step: st.step };
    let mut muon = BTreeMap::new();
    for (i, (name, _)) in st.model.block_named_parameters().into_iter().enumerate() {
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
        train_time_s: st.elapsed(),
        device: crate::device::describe(st.device),
        stacklab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("STACKLAB_GIT_COMMIT").into(),
        created_at: chrono::Local::now().to_rfc3339(),
        wte_sha256: wte_hash(&st.model.wte),
        wte_frozen: st.from_model.is_some(),
        val_tokens: st.cfg.eval.val_tokens,
        model: st.cfg.model.clone(),
        train_data: st.train.state(),
        data_position: None,
        adamw_step: st.adamw.as_ref().map(|a| a.step).unwrap_or(0),
        from_model: st.from_model.clone(),
        val_loss_history: st.val_history.clone(),
        init_from: st.init_from.clone(),
        blocks: st.model.custom_layout().unwrap_or_default(),
    };
    let p = checkpoint::write_checkpoint(&st.run.path, &st.model, &opt, &meta, &st.config_toml)?;
    st.last_checkpoint_step = Some(st.step);
    st.run.log(&format!("checkpoint {}", p.display()));
    Ok(p)
}

/// Checkpoints unless the weights have gone non-finite (then the last good one stays).
/// Rank 0 alone writes in a parallel training; the others, whose weights are the same,
/// only count the checkpoint as written.
pub fn checkpoint_if_finite(st: &mut State, rep: &Reporter) -> Result<()> {
    if !weights_finite(&st.model) {
        return Ok(());
    }
    if !st.world.is_main() {
        st.last_checkpoint_step = Some(st.step);
        return Ok(());
    }
    let p = write_checkpoint(st)?;
    rep.line(&format!("checkpoint {}", p.display()));
    apply_retention(st, rep);
    Ok(())
}

/// Checkpoints kept for a lineage that were already reported (said once per training).
static REPORTED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Removes the checkpoints the run's retention no longer keeps (after the new one is
/// complete). A checkpoint another run's lineage names is kept and said so; a removal that
/// fails is logged and does not stop the training.
fn apply_retention(st: &State, rep: &Reporter) {
    let r = Retention::of_config(&st.cfg);
    if r.keeps_all() {
        return;
    }
    let root = st.run.path.parent().unwrap_or(&st.run.path);
    let plan = retention::plan(&st.run.path, &r, &Lineages::scan(root));
    for (ck, why) in &plan.kept_for_lineage {
        if REPORTED
            .lock()
            .map(|mut s| s.insert(ck.clone()))
            .unwrap_or(true)
        {
            let msg = format!("retention: kept {} because {why} names it", ck.display());
            st.run.log(&msg);
            rep.line(&msg);
        }
    }
    for removal in &plan.remove {
        match crate::runs::disk::remove_dir_safely(&removal.path) {
            Ok(bytes) => st.run.log(&format!(
                "retention ({}): removed {} ({})",
                r.describe(),
                removal.path.display(),
                format_size(bytes)
            )),
            Err(e) => {
                let msg = format!("retention: {e:#}");
                st.run.log(&msg);
                rep.line(&msg);
            }
        }
    }
}
