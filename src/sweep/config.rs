//! A sweep config (`configs/sweep-*.toml`): the models to train (a training config plus
//! overrides, several seeds each, `from_model` by name), the stack grid to evaluate, and the
//! evaluation data.
//!
//! ```toml
//! name = "tiny"
//! train_config = "tiny"          # a config name or path; every model starts from it
//! set = ["schedule.steps=200"]   # overrides for every model
//!
//! [[models]]
//! name = "m1"
//! seeds = [0, 1, 2]              # one run per replicate
//!
//! [[models]]
//! name = "m2"
//! from_model = "m1"              # W from m1 of the same replicate, frozen
//! seeds = [100, 101, 102]
//! processes = 2                  # data parallel: two device slots per training (default 1)
//!
//! [grid]
//! pairs = [["m1", "m2"]]         # distinct stacks, bottom first
//! same_model = ["m1"]            # baselines: the model stacked on itself
//! use_first_layer = [false, true]
//! use_last_layer = [false, true]
//! norms = [{ norm_wte = "none", norm_lm_head = "rms_norm", norm_inter_model = "none" }]
//!
//! [eval]
//! data = "embedded"              # a val shard glob, `embedded`, or "" for model 1's data
//! tokens = 65536
//!
//! [heal]                         # optional: heal some of the grid's stacks (`stacklab heal`)
//! steps = 40                     # K per arm, a multiple of 4
//! arms = ["stack", "self", "scratch", "continue"]
//! pairs = [["m1", "m2"]]         # which grid pairs (default: every pair of the grids)
//! use_first_layer = [false]      # which flags (default: the grids' own)
//! use_last_layer = [true]
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::NormKind;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The training config every model starts from (a name in the config dir or a path).
    pub train_config: String,
    /// `key=value` overrides for every model.
    #[serde(default)]
    pub set: Vec<String>,
    pub models: Vec<SweepModel>,
    /// One stack grid (`[grid]`) ...
    #[serde(default)]
    pub grid: Option<Grid>,
    /// ... and/or several (`[[grids]]`), e.g. one per pair of models trained with their own
    /// norms, each evaluated with those norms.
    #[serde(default)]
    pub grids: Vec<Grid>,
    #[serde(default)]
    pub eval: SweepEval,
    /// Heal experiments on some of the grid's distinct-model stacks.
    #[serde(default)]
    pub heal: Option<HealSection>,
}

fn all_arms() -> Vec<String> {
    ["stack", "self", "scratch", "continue"]
        .map(String::from)
        .to_vec()
}

/// `[heal]`: each chosen grid stack of each replicate healed as `stacklab heal` does, its
/// arms trained `steps` steps with the parts' recipe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealSection {
    /// Training steps of every arm (a multiple of 4).
    pub steps: i64,
    /// Which arms: `stack`, `self`, `scratch`, `continue` (default: all four).
    #[serde(default = "all_arms")]
    pub arms: Vec<String>,
    /// Which grid pairs to heal, bottom first (default: every `pairs` entry of the grids).
    #[serde(default)]
    pub pairs: Vec<Vec<String>>,
    /// Which `use_first_layer` values (default: each grid's own).
    #[serde(default)]
    pub use_first_layer: Vec<bool>,
    /// Which `use_last_layer` values (default: each grid's own).
    #[serde(default)]
    pub use_last_layer: Vec<bool>,
    /// Train the shared embedding and head too (default: frozen, as the parts trained).
    #[serde(default)]
    pub train_w: bool,
    /// `key=value` overrides of the arms' recipe.
    #[serde(default)]
    pub set: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepModel {
    pub name: String,
    /// Another model of the sweep whose `W` (same replicate) this one copies and freezes.
    #[serde(default)]
    pub from_model: Option<String>,
    /// One seed per replicate; every model lists as many.
    pub seeds: Vec<i64>,
    /// `key=value` overrides for this model (after the sweep's).
    #[serde(default)]
    pub set: Vec<String>,
    /// Processes each of its trainings runs in (data parallel, `train --nproc`): it takes
    /// as many device slots at once (all cpu, or distinct GPUs). Divides `batch.ranks`.
    #[serde(default = "one")]
    pub processes: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormSetting {
    pub norm_wte: NormKind,
    pub norm_lm_head: NormKind,
    pub norm_inter_model: NormKind,
}

impl Default for NormSetting {
    fn default() -> Self {
        NormSetting {
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
            norm_inter_model: NormKind::None,
        }
    }
}

fn both() -> Vec<bool> {
    vec![false, true]
}

fn seed_norms() -> Vec<NormSetting> {
    vec![NormSetting::default()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Stacks of distinct models, bottom first, by model name.
    #[serde(default)]
    pub pairs: Vec<Vec<String>>,
    /// Models stacked on themselves (the baseline).
    #[serde(default)]
    pub same_model: Vec<String>,
    #[serde(default = "both")]
    pub use_first_layer: Vec<bool>,
    #[serde(default = "both")]
    pub use_last_layer: Vec<bool>,
    #[serde(default = "seed_norms")]
    pub norms: Vec<NormSetting>,
    /// Stack spec files (`stack --save-spec` format) evaluated as they are, once.
    #[serde(default)]
    pub specs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SweepEval {
    /// A val shard glob, `embedded`, or empty for the data model 1 was trained on.
    #[serde(default)]
    pub data: String,
    /// Tokens per stack evaluation; 0 takes model 1's `eval.val_tokens`.
    #[serde(default)]
    pub tokens: i64,
    #[serde(default)]
    pub seq_len: Option<i64>,
    #[serde(default)]
    pub batch: Option<i64>,
}

impl SweepConfig {
    pub fn load(path: &Path) -> Result<SweepConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep config {}", path.display()))?;
        let src = path.display().to_string();
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("{src}: not valid TOML: {}", e.message())
        })?;
        let cfg: SweepConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| anyhow::anyhow!("{src}: `{}`: {}", e.path(), e.inner()))?;
        cfg.validate(&src)?;
        Ok(cfg)
    }

    /// Every grid, `[grid]` first.
    pub fn all_grids(&self) -> Vec<&Grid> {
        self.grid.iter().chain(self.grids.iter()).collect()
    }

    pub fn replicates(&self) -> usize {
        self.models.first().map(|m| m.seeds.len()).unwrap_or(0)
    }

    fn validate(&self, src: &str) -> Result<()> {
        // Run names are `{name}-{model}-r{replicate}`: both parts must be folder names.
        crate::paths::check_folder_name("sweep name", &self.name)
            .with_context(|| format!("{src}: `name`"))?;
        if self.models.is_empty() {
            bail!("{src}: `models`: a sweep needs at least one [[models]] entry");
        }
        let n = self.replicates();
        let mut seen: Vec<&str> = Vec::new();
        for m in &self.models {
            crate::paths::check_folder_name("model name", &m.name)
                .with_context(|| format!("{src}: `models.name`"))?;
            if m.seeds.is_empty() || m.seeds.len() != n {
                bail!(
                    "{src}: `models.{}.seeds`: every model lists one seed per replicate ({} has {}, {} has {n})",
                    m.name,
                    m.name,
                    m.seeds.len(),
                    self.models[0].name
                );
            }
            if m.processes == 0 {
                bail!("{src}: `models.{}.processes`: expected at least 1", m.name);
            }
            if seen.contains(&m.name.as_str()) {
                bail!("{src}: `models.name`: `{}` appears twice", m.name);
            }
            if let Some(p) = &m.from_model {
                if !seen.contains(&p.as_str()) {
                    bail!(
                        "{src}: `models.{}.from_model`: `{p}` is not a model listed before it",
                        m.name
                    );
                }
            }
            seen.push(&m.name);
        }
        let known = |name: &String, key: &str| -> Result<()> {
            if !seen.contains(&name.as_str()) {
                bail!(
                    "{src}: `grid.{key}`: `{name}` is not one of the models ({})",
                    seen.join(", ")
                );
            }
            Ok(())
        };
        if self.all_grids().is_empty() {
            bail!("{src}: `grid`: a sweep needs a [grid] (or [[grids]]) of stacks to evaluate");
        }
        for g in self.all_grids() {
            for p in &g.pairs {
                if p.len() < 2 {
                    bail!("{src}: `grid.pairs`: {p:?} needs at least two models, bottom first");
                }
                for m in p {
                    known(m, "pairs")?;
                }
            }
            for m in &g.same_model {
                known(m, "same_model")?;
            }
            if g.use_first_layer.is_empty() || g.use_last_layer.is_empty() || g.norms.is_empty() {
                bail!("{src}: `grid`: use_first_layer, use_last_layer and norms need at least one value each");
            }
        }
        if self.eval.tokens < 0 {
            bail!("{src}: `eval.tokens` must be 0 (model 1's eval.val_tokens) or more");
        }
        if let Some(h) = &self.heal {
            self.validate_heal(h, src)?;
        }
        Ok(())
    }

    fn validate_heal(&self, h: &HealSection, src: &str) -> Result<()> {
        if let Some((key, why)) = crate::heal::check_settings(h.steps, &h.arms) {
            bail!("{src}: `heal.{key}` = {why}");
        }
        for a in &h.arms {
            a.parse::<crate::heal::Arm>()
                .with_context(|| format!("{src}: `heal.arms`"))?;
        }
        let grid_pairs: Vec<&Vec<String>> = self
            .all_grids()
            .iter()
            .flat_map(|g| g.pairs.iter())
            .collect();
        if grid_pairs.is_empty() {
            bail!("{src}: `heal`: the grids have no `pairs` to heal");
        }
        for p in &h.pairs {
            if !grid_pairs.contains(&p) {
                bail!(
                    "{src}: `heal.pairs`: {p:?} is not one of the grids' pairs ({})",
                    grid_pairs
                        .iter()
                        .map(|p| format!("{p:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Ok(())
    }

    /// The grid stacks `[heal]` chooses: a distinct-model pair, with flags it lists.
    pub fn heals(&self, models: &[String], first: bool, last: bool) -> bool {
        let Some(h) = &self.heal else {
            return false;
        };
        (h.pairs.is_empty() || h.pairs.iter().any(|p| p.as_slice() == models))
            && (h.use_first_layer.is_empty() || h.use_first_layer.contains(&first))
            && (h.use_last_layer.is_empty() || h.use_last_layer.contains(&last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, model: &str) -> Result<SweepConfig> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sweep.toml");
        let text = format!(
            "name = {name:?}\ntrain_config = \"tiny\"\n[[models]]\nname = {model:?}\nseeds = [0]\n[grid]\nsame_model = [{model:?}]\n"
        );
        std::fs::write(&p, text).unwrap();
        SweepConfig::load(&p)
    }

    #[test]
    fn model_and_sweep_names_pass_the_run_name_check() {
        load("tiny", "m1").unwrap();
        for bad in ["../m1", "a/b", ".m", "a\\b", "tab\there", ""] {
            let e = format!("{:#}", load("tiny", bad).unwrap_err());
            assert!(
                e.contains("`models.name`: model name")
                    && e.contains("is not usable as a folder name"),
                "{bad:?}: {e}"
            );
        }
        let e = format!("{:#}", load("../up", "m1").unwrap_err());
        assert!(
            e.contains("`name`: sweep name `../up` is not usable as a folder name"),
            "{e}"
        );
    }
}
