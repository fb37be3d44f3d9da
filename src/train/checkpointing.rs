//! A training state into a checkpoint folder (see `runs::checkpoint` for the format and its
//! crash safety): the weights, the optimizer state, and the metadata a resume needs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use super::reporter::Reporter;
use super::setup::{weights_finite, State};
use crate::model::weights::wte_hash;
use crate::runs::checkpoint::{self, CheckpointMeta, OptimizerTensors};

pub fn write_checkpoint(st: &mut State) -> Result<PathBuf> {
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
pub fn checkpoint_if_finite(st: &mut State, rep: &Reporter) -> Result<()> {
    if !weights_finite(&st.model) {
        return Ok(());
    }
    let p = write_checkpoint(st)?;
    rep.line(&format!("checkpoint {}", p.display()));
    Ok(())
}
