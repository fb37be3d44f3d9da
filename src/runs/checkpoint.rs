//! Checkpoints: a folder `step_NNNNNN/` holding `model.safetensors` (the seed's tensor
//! names), `optimizer.safetensors`, the run's `config.toml` and `meta.toml`.
//!
//! A checkpoint is built in a hidden temporary folder and renamed into place once every file
//! is written and synced, `meta.toml` last; only `step_*` folders with a `meta.toml` count.
//! A crash or `kill -9` at any moment leaves at most a hidden temporary folder behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::{ModelConfig, NormKind};
use crate::data::{LoaderState, TrainStreamState};
use crate::model::weights::{self, SeedOptions};
use crate::model::{BlockLayout, Gpt};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const META_FILE: &str = "meta.toml";
pub const CONFIG_FILE: &str = "config.toml";

/// Test hook: `STACKLAB_FAULT_KILL_IN_CHECKPOINT=N` kills the process with SIGKILL in the
/// middle of writing the checkpoint of step N (after the weights, before the metadata).
pub const FAULT_ENV: &str = "STACKLAB_FAULT_KILL_IN_CHECKPOINT";

/// Where `W` came from when it was copied and frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The parent checkpoint, as it was named when the run started.
    pub name: String,
    /// SHA-256 of the parent's `W` (fp32 bytes).
    pub wte_sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValPoint {
    pub step: i64,
    pub val_loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// `<run>/step_NNNNNN`.
    pub name: String,
    pub step: i64,
    pub total_steps: i64,
    pub tokens_seen: i64,
    pub seed: i64,
    /// Seconds of training (steps, validation, checkpoints) up to this checkpoint.
    pub train_time_s: f64,
    pub device: String,
    pub stacklab_version: String,
    pub git_commit: String,
    pub created_at: String,
    /// SHA-256 of this model's `W`: children trained `from_model` record it as lineage.
    pub wte_sha256: String,
    pub wte_frozen: bool,
    /// Validation tokens the run used (the default for `eval`).
    pub val_tokens: i64,
    /// Model shape and the norms it was trained with.
    pub model: ModelConfig,
    /// Where each emulated rank stands in the train shards, and the shard order.
    #[serde(default)]
    pub train_data: TrainStreamState,
    /// The single loader position of checkpoints written before per-rank data (read only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_position: Option<LoaderState>,
    pub adamw_step: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from_model: Option<Lineage>,
    #[serde(default)]
    pub val_loss_history: Vec<ValPoint>,
    /// The checkpoint the run's weights started from (`init_from`), when not from scratch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub init_from: Option<InitLineage>,
    /// Per-block attention scale, heads and boundary norm, when they are not what `model`
    /// implies (a stack, or a run trained from one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockLayout>,
}

/// Where a run's initial weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitLineage {
    /// The checkpoint as it was named when the run started.
    pub name: String,
    /// SHA-256 of its weights file.
    pub sha256: String,
}

pub fn checkpoint_dir_name(step: i64) -> String {
    format!("step_{step:06}")
}

/// The step of a checkpoint folder name (`step_000100` is 100).
pub fn step_of(name: &str) -> Option<i64> {
    name.strip_prefix("step_").and_then(|s| s.parse().ok())
}

/// The valid checkpoints in a run folder, by step.
pub fn list_checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = step_of(&name)?;
            let p = e.path();
            p.join(META_FILE).is_file().then_some((step, p))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Cleans up after a crash while writing checkpoints: removes unfinished temporary folders,
/// and puts back a checkpoint that was moved aside to be rewritten if the new one never
/// arrived.
pub fn remove_stale_temporaries(run: &Path) {
    for e in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        if !rest.starts_with("step_") {
            continue;
        }
        if let Some((final_name, _)) = rest.split_once(".old-") {
            let final_dir = run.join(final_name);
            if !final_dir.exists() && e.path().join(META_FILE).is_file() {
                let _ = std::fs::rename(e.path(), &final_dir);
                continue;
            }
        }
        if name.contains(".tmp-") || name.contains(".old-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What a checkpoint holds besides the model.
pub struct OptimizerTensors {
    pub adamw: Option<(Tensor, Tensor)>,
    /// Muon momentum buffers by parameter name.
    pub muon: BTreeMap<String, Tensor>,
}

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
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
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
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
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

/// SHA-256 of a file's bytes, read in pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A native checkpoint folder whose metadata has been read.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let meta_path = path.join(META_FILE);
        let text = std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "{}: not a complete checkpoint (no readable {META_FILE})",
                path.display()
            )
        })?;
        let meta: CheckpointMeta = toml::from_str(&text)
            .with_context(|| format!("{}: invalid checkpoint metadata", meta_path.display()))?;
        meta.model.validate(&meta_path.display().to_string())?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            meta,
        })
    }

    pub fn load_model(&self, device: Device) -> Result<Gpt> {
        let p = self.path.join(MODEL_FILE);
        let origin = p.display().to_string();
        let tensors = weights::normalise_seed_names(weights::read_safetensors(&p)?, &origin)?;
        let layout = (!self.meta.blocks.is_empty()).then_some(self.meta.blocks.as_slice());
        weights::model_from_tensors_with_layout(&self.meta.model, layout, tensors, device, &origin)
    }

    pub fn load_optimizer(&self, device: Device) -> Result<OptimizerTensors> {
        let p = self.path.join(OPTIMIZER_FILE);
        let mut tensors = weights::read_safetensors(&p)?;
        let adamw = match (
            tensors.remove("adamw.exp_avg"),
            tensors.remove("adamw.exp_avg_sq"),
        ) {
            (Some(m), Some(v)) => Some((m.to_device(device), v.to_device(device))),
            (None, None) => None,
            _ => bail!("{}: AdamW state is incomplete", p.display()),
        };
        let mut muon = BTreeMap::new();
        for (name, t) in tensors {
            match name.strip_prefix("muon.momentum.") {
                Some(param) => {
                    muon.insert(param.to_string(), t.to_kind(Kind::Float).to_device(device));
                }
                None => bail!("{}: unexpected tensor {name}", p.display()),
            }
        }
        Ok(OptimizerTensors { adamw, muon })
    }

    pub fn config_toml(&self) -> Result<String> {
        let p = self.path.join(CONFIG_FILE);
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    }
}

/// A checkpoint as given on a command line: a native folder, or a seed-format file.
#[derive(Debug, Clone)]
pub enum CheckpointRef {
    Native(Box<Checkpoint>),
    SeedFile(PathBuf),
}

impl CheckpointRef {
    /// Resolves `arg`: a checkpoint folder, a run folder (its latest checkpoint), a
    /// `.safetensors` file in the seed's naming, or any of these relative to the checkpoint dir.
    pub fn resolve(arg: &str) -> Result<CheckpointRef> {
        let direct = PathBuf::from(arg);
        let in_dir = crate::paths::checkpoint_dir().join(arg);
        for candidate in [&direct, &in_dir] {
            if let Some(r) = Self::at(candidate)? {
                return Ok(r);
            }
        }
        bail!(
            "checkpoint `{arg}` not found: expected a checkpoint folder (with {META_FILE}), a run folder, or a .safetensors file (looked at {} and {})",
            direct.display(),
            in_dir.display()
        )
    }

    fn at(p: &Path) -> Result<Option<CheckpointRef>> {
        if p.is_file() {
            if p.extension().map(|e| e == "safetensors").unwrap_or(false) {
                return Ok(Some(CheckpointRef::SeedFile(p.to_path_buf())));
            }
            bail!(
                "{}: expected a .safetensors file or a checkpoint folder",
                p.display()
            );
        }
        if !p.is_dir() {
            return Ok(None);
        }
        if p.join(META_FILE).is_file() {
            return Ok(Some(CheckpointRef::Native(Box::new(Checkpoint::open(p)?))));
        }
        if p.join(MODEL_FILE).is_file() {
            bail!(
                "{}: has {MODEL_FILE} but no {META_FILE}: an incomplete checkpoint (pass the .safetensors file itself to load the weights alone)",
                p.display()
            );
        }
        if let Some(latest) = list_checkpoints(p).pop() {
            return Ok(Some(CheckpointRef::Native(Box::new(Checkpoint::open(
                &latest,
            )?))));
        }
        bail!("{}: a folder without checkpoints", p.display())
    }

    pub fn name(&self) -> String {
        match self {
            CheckpointRef::Native(c) => c.meta.name.clone(),
            CheckpointRef::SeedFile(p) => p.display().to_string(),
        }
    }

    /// The file holding the weights.
    pub fn weights_path(&self) -> PathBuf {
        match self {
            CheckpointRef::Native(c) => c.path.join(MODEL_FILE),
            CheckpointRef::SeedFile(p) => p.clone(),
        }
    }

    /// SHA-256 of the weights file: the identity of a checkpoint in lineage and results.
    pub fn sha256(&self) -> Result<String> {
        sha256_file(&self.weights_path())
    }

    /// Loads the model. `opts` gives what a seed file cannot tell (heads, norms, context);
    /// for a native checkpoint, norms in `opts` override the trained ones (the caller warns).
    pub fn load_model(&self, opts: &SeedOptions, device: Device) -> Result<Gpt> {
        match self {
            CheckpointRef::Native(c) => {
                let mut m = c.load_model(device)?;
                if let Some(n) = opts.norm_wte {
                    m.cfg.norm_wte = n;
                }
                if let Some(n) = opts.norm_lm_head {
                    m.cfg.norm_lm_head = n;
                }
                if let Some(t) = opts.seq_len {
                    m.cfg.seq_len = t;
                }
                Ok(m)
            }
            CheckpointRef::SeedFile(p) => weights::load_seed_file(p, opts, device),
        }
    }

    /// Just the embedding/lm-head `W` (all `from_model` needs; no head count involved).
    pub fn load_wte(&self, device: Device) -> Result<Tensor> {
        let (path, origin) = match self {
            CheckpointRef::Native(c) => (c.path.join(MODEL_FILE), c.meta.name.clone()),
            CheckpointRef::SeedFile(p) => (p.clone(), p.display().to_string()),
        };
        let mut tensors =
            weights::normalise_seed_names(weights::read_safetensors(&path)?, &origin)?;
        let w = tensors
            .remove(crate::model::gpt::WTE)
            .expect("normalised names hold W");
        if w.dim() != 2 {
            bail!(
                "{origin}: W should be a matrix (vocab, width), found shape {:?}",
                w.size()
            );
        }
        Ok(w.to_kind(Kind::Float).to_device(device).detach())
    }

    /// The norms the model was trained with, where known.
    pub fn trained_norms(&self) -> Option<(NormKind, NormKind)> {
        match self {
            CheckpointRef::Native(c) => Some((c.meta.model.norm_wte, c.meta.model.norm_lm_head)),
            CheckpointRef::SeedFile(_) => None,
        }
    }
}
