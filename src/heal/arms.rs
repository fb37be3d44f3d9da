//! Each arm's starting point and config: the recipe (the first part's own config, or
//! `--config`) with `--set`, the heal's steps and schedule, and what the arm starts from.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Device;

use super::{score_stack, HealOptions};
use crate::config::{ModelConfig, TrainConfig};
use crate::model::Gpt;
use crate::runs::checkpoint::{self, CheckpointMeta, ValPoint};
use crate::runs::CheckpointRef;
use crate::stack::results::StackReport;
use crate::stack::StackSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// The stack, `init_from` it saved as a checkpoint.
    Stack,
    /// The first part stacked on itself, same flags and norms.
    SelfStack,
    /// A fresh model of the stack's depth and width with the first part's `W`.
    Scratch,
    /// The better part, trained on.
    Continue,
}

impl Arm {
    pub const ALL: [Arm; 4] = [Arm::Stack, Arm::SelfStack, Arm::Scratch, Arm::Continue];

    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Stack => "stack",
            Arm::SelfStack => "self",
            Arm::Scratch => "scratch",
            Arm::Continue => "continue",
        }
    }
}

impl std::str::FromStr for Arm {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Arm> {
        Arm::ALL
            .into_iter()
            .find(|a| a.as_str() == s.trim())
            .with_context(|| format!("`{s}` is not an arm: stack, self, scratch or continue"))
    }
}

/// Validations per quarter of the run: the largest divisor of K/4 that gives at least four.
fn val_every(steps: i64) -> i64 {
    let q = steps / 4;
    (1..=(q / 4).max(1)).rev().find(|d| q % d == 0).unwrap_or(1)
}

/// The recipe every arm trains with.
fn recipe(o: &HealOptions, first: &CheckpointRef) -> Result<TrainConfig> {
    let mut cfg = match &o.config {
        Some(c) => TrainConfig::load(&crate::config::resolve_config_path(c)?, &o.sets)?,
        None => match first {
            CheckpointRef::Native(c) => TrainConfig::from_toml_str(
                &c.config_toml()?,
                &c.path.join(checkpoint::CONFIG_FILE).display().to_string(),
                &o.sets,
            )?,
            CheckpointRef::SeedFile(p) => bail!(
                "{}: a seed-format file has no training config; give the recipe with --config",
                p.display()
            ),
        },
    };
    let before = cfg.schedule.steps.max(1);
    let scale = |n: i64| ((n as f64) * o.steps as f64 / before as f64).round() as i64;
    cfg.schedule.warmup = scale(cfg.schedule.warmup).min(o.steps);
    cfg.schedule.warmdown = scale(cfg.schedule.warmdown).min(o.steps);
    cfg.schedule.steps = o.steps;
    cfg.eval.val_every = val_every(o.steps);
    cfg.checkpoint_every = o.steps / 4;
    cfg.from_model = String::new();
    cfg.init_from = String::new();
    Ok(cfg)
}

/// What the arms are built from.
pub(super) struct Plan<'a> {
    o: &'a HealOptions,
    stack: &'a StackReport,
    /// The first part's checkpoint: its `W` is every arm's.
    first: PathBuf,
    recipe: TrainConfig,
}

impl<'a> Plan<'a> {
    pub(super) fn new(o: &'a HealOptions, stack: &'a StackReport) -> Result<Plan<'a>> {
        let first = PathBuf::from(&stack.models[0].path);
        let recipe = recipe(o, &CheckpointRef::resolve(&first.display().to_string())?)?;
        Ok(Plan {
            o,
            stack,
            first,
            recipe,
        })
    }

    /// The arm's run name and its config file (written into the heal folder).
    pub(super) fn prepare(&self, arm: Arm) -> Result<(String, PathBuf)> {
        let init = self.o.out.join("init").join(arm.as_str());
        let mut cfg = self.recipe.clone();
        let start: PathBuf = match arm {
            Arm::Stack => init.clone(),
            Arm::SelfStack => {
                let spec = StackSpec {
                    models: vec![self.first.display().to_string(); self.o.spec.models.len()],
                    sha256: vec![None; self.o.spec.models.len()],
                    ..self.o.spec.clone()
                };
                score_stack(self.o, &spec, Some(&init))?;
                init.clone()
            }
            Arm::Scratch => {
                if !init.exists() {
                    self.write_scratch(&init)?;
                }
                init.clone()
            }
            Arm::Continue => {
                let best = (0..self.stack.models.len())
                    .min_by(|&a, &b| {
                        self.stack.models[a]
                            .val_loss
                            .total_cmp(&self.stack.models[b].val_loss)
                    })
                    .expect("a stack has parts");
                PathBuf::from(&self.stack.models[best].path)
            }
        };
        cfg.model = model_of(&start)?;
        cfg.init_from = start.display().to_string();
        if !self.o.train_w {
            cfg.from_model = self.first.display().to_string();
        }
        let run = format!("{}-{}", self.o.name, arm.as_str());
        let path = self
            .o
            .out
            .join("configs")
            .join(format!("{}.toml", arm.as_str()));
        crate::paths::write_atomic(&path, cfg.to_toml_string().as_bytes())?;
        TrainConfig::load(&path, &[])
            .with_context(|| format!("the {} arm's config", arm.as_str()))?;
        Ok((run, path))
    }

    /// A fresh model of the stack's depth and width (the recipe's seed), with the first
    /// part's `W`, saved as a checkpoint folder.
    fn write_scratch(&self, dir: &Path) -> Result<()> {
        let mut mcfg =
            model_of(&self.o.out.join("init").join("stack")).or_else(|_| model_of(&self.first))?;
        mcfg.n_layer = self.stack.blocks.len() as i64;
        mcfg.norm_wte = self.stack.norm_wte;
        mcfg.norm_lm_head = self.stack.norm_lm_head;
        let first = CheckpointRef::resolve(&self.first.display().to_string())?;
        let mut model = Gpt::new(&mcfg, self.recipe.seed, Device::Cpu);
        model.wte = first.load_wte(Device::Cpu)?;
        let mut cfg = self.recipe.clone();
        cfg.model = mcfg.clone();
        let meta = CheckpointMeta {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scratch".into()),
            step: 0,
            total_steps: 0,
            tokens_seen: 0,
            seed: self.recipe.seed,
            train_time_s: 0.0,
            device: "cpu".into(),
            stacklab_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("STACKLAB_GIT_COMMIT").into(),
            created_at: chrono::Utc::now().to_rfc3339(),
            wte_sha256: crate::model::weights::wte_hash(&model.wte),
            wte_frozen: false,
            val_tokens: cfg.eval.val_tokens,
            model: mcfg,
            train_data: Default::default(),
            data_position: None,
            adamw_step: 0,
            from_model: None,
            val_loss_history: Vec::<ValPoint>::new(),
            init_from: None,
            blocks: vec![],
        };
        checkpoint::write_weights_checkpoint(dir, &model, &meta, &cfg.to_toml_string())
            .context("the scratch arm's starting checkpoint")?;
        Ok(())
    }
}

/// The model shape a checkpoint records.
fn model_of(path: &Path) -> Result<ModelConfig> {
    match CheckpointRef::resolve(&path.display().to_string())? {
        CheckpointRef::Native(c) => Ok(c.meta.model),
        CheckpointRef::SeedFile(p) => bail!(
            "{}: a seed-format file; heal trains from stacklab checkpoints",
            p.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validations_fall_on_every_quarter() {
        for k in [4, 8, 12, 40, 100, 300, 6200] {
            let v = val_every(k);
            assert_eq!((k / 4) % v, 0, "K = {k}, every {v}");
            assert!(k / v >= 4, "K = {k}: {} validations", k / v);
        }
        assert_eq!(val_every(100), 5);
        assert_eq!("self".parse::<Arm>().unwrap(), Arm::SelfStack);
        assert!("selfish".parse::<Arm>().is_err());
    }
}
