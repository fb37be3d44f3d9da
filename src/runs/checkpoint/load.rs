//! Reading checkpoints: a native folder's metadata, weights and optimizer state, a checkpoint
//! as given on a command line (folder, run folder or seed-format file), and weight hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::{
    list_checkpoints, CheckpointMeta, OptimizerTensors, CONFIG_FILE, META_FILE, MODEL_FILE,
    OPTIMIZER_FILE,
};
use crate::config::NormKind;
use crate::model::weights::{self, SeedOptions};
use crate::model::Gpt;

pub use crate::hash::sha256_file;

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
        // Optimizer state is fp32; a tensor of another floating kind is converted, one that
        // is not floating point at all is not optimizer state.
        for (name, t) in tensors.iter_mut() {
            let kind = t.kind();
            if !t.is_floating_point() {
                bail!(
                    "{}: tensor `{name}` has dtype {kind:?}, expected a floating-point one (Float)",
                    p.display()
                );
            }
            if kind != Kind::Float {
                *t = t.to_kind(Kind::Float);
            }
        }
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
                    muon.insert(param.to_string(), t.to_device(device));
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
