//! Writing checkpoint folders atomically: a training checkpoint (weights and optimizer
//! state) and a weights-only one (a stack).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use super::{
    checkpoint_dir_name, CheckpointMeta, OptimizerTensors, CONFIG_FILE, FAULT_ENV, META_FILE,
    MODEL_FILE, OPTIMIZER_FILE,
};
use crate::model::weights;
use crate::model::Gpt;

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Writes a checkpoint folder atomically and returns its path.
pub fn write_checkpoint(
    run: &Path,
    model: &Gpt,
    optimizer: &OptimizerTensors,
    meta: &CheckpointMeta,
    config_toml: &str,
) -> Result<PathBuf> {
    let final_dir = run.join(checkpoint_dir_name(meta.step));
    let tmp = run.join(format!(
        ".{}.tmp-{}",
        checkpoint_dir_name(meta.step),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    // Created, not reused: whatever is at that name now (a link) is not written through.
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        weights::write_model(model, &tmp.join(MODEL_FILE))?;
        sync_file(&tmp.join(MODEL_FILE))?;
        if std::env::var(FAULT_ENV)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            == Some(meta.step)
        {
            // SAFETY: deliberately dying mid-checkpoint, as kill -9 would.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        let mut opt: Vec<(String, Tensor)> = Vec::new();
        if let Some((m, v)) = &optimizer.adamw {
            opt.push((
                "adamw.exp_avg".into(),
                m.to_device(Device::Cpu).contiguous(),
            ));
            opt.push((
                "adamw.exp_avg_sq".into(),
                v.to_device(Device::Cpu).contiguous(),
            ));
        }
        for (name, buf) in &optimizer.muon {
            opt.push((
                format!("muon.momentum.{name}"),
                buf.to_device(Device::Cpu).contiguous(),
            ));
        }
        let opt_path = tmp.join(OPTIMIZER_FILE);
        Tensor::write_safetensors(&opt, &opt_path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", opt_path.display()))?;
        sync_file(&opt_path)?;
        crate::paths::write_atomic(&tmp.join(CONFIG_FILE), config_toml.as_bytes())?;
        crate::paths::write_atomic(
            &tmp.join(META_FILE),
            toml::to_string_pretty(meta)?.as_bytes(),
        )?;
        sync_dir(&tmp);
        if final_dir.exists() {
            // Rewriting a step (a resumed run): move the old one aside first.
            let old = run.join(format!(
                ".{}.old-{}",
                checkpoint_dir_name(meta.step),
                std::process::id()
            ));
            std::fs::rename(&final_dir, &old)?;
            std::fs::rename(&tmp, &final_dir)?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &final_dir)?;
        }
        sync_dir(run);
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("cannot write checkpoint {}", final_dir.display()));
    }
    Ok(final_dir)
}

/// Writes a checkpoint folder that holds weights, config and metadata but no optimizer
/// state (a stack: nothing was trained), atomically: built in a hidden sibling folder and
/// renamed to `dir`, which must not exist yet.
pub fn write_weights_checkpoint(
    dir: &Path,
    model: &Gpt,
    meta: &CheckpointMeta,
    config_toml: &str,
) -> Result<PathBuf> {
    if dir.exists() {
        bail!(
            "{} already exists: give a new folder to save into",
            dir.display()
        );
    }
    let name = dir
        .file_name()
        .with_context(|| format!("{} is not a folder path", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // Created, not reused: whatever is at that name now (a link) is not written through.
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        weights::write_model(model, &tmp.join(MODEL_FILE))?;
        sync_file(&tmp.join(MODEL_FILE))?;
        crate::paths::write_atomic(&tmp.join(CONFIG_FILE), config_toml.as_bytes())?;
        crate::paths::write_atomic(
            &tmp.join(META_FILE),
            toml::to_string_pretty(meta)?.as_bytes(),
        )?;
        sync_dir(&tmp);
        std::fs::rename(&tmp, dir)?;
        sync_dir(&parent);
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("cannot write checkpoint {}", dir.display()));
    }
    Ok(dir.to_path_buf())
}
