//! The heals a sweep plans (`[heal]`): each chosen grid stack of each replicate, healed as
//! `stacklab heal` does, its arms runs beside the sweep's.
//!
//! A heal is named by what it starts from: the grid point, the heal settings and the parts'
//! weights (SHA-256). A part retrained later gives a new name, so a heal is never reused for
//! other checkpoints and never resumed from a stale starting stack; until its parts exist
//! the name is not known, and the heal waits for them.

use std::path::{Path, PathBuf};

use super::{short_hash, PlannedStack};
use crate::sweep::config::SweepConfig;

/// Where a sweep keeps its heals (`<out>/heal/<name>/`).
pub const HEAL_DIR: &str = "heal";

/// A grid stack the sweep heals.
#[derive(Debug, Clone)]
pub struct PlannedHeal {
    /// The grid stack (its parts, flags and norms).
    pub stack: PlannedStack,
}

/// A heal whose parts exist: its name, folder and whether it is finished.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedHeal {
    pub name: String,
    pub dir: PathBuf,
    pub done: bool,
}

/// The grid stacks `[heal]` chooses: stacks of distinct models (not a model on itself).
pub fn heal_stacks(cfg: &SweepConfig, stacks: &[PlannedStack]) -> Vec<PlannedHeal> {
    stacks
        .iter()
        .filter(|s| s.spec.is_none() && s.models.len() >= 2)
        .filter(|s| s.models.iter().any(|m| m != &s.models[0]))
        .filter(|s| {
            cfg.heals(
                &s.models,
                s.use_first_layer == Some(true),
                s.use_last_layer == Some(true),
            )
        })
        .map(|s| PlannedHeal { stack: s.clone() })
        .collect()
}

impl PlannedHeal {
    /// The heal's name and folder once every part has a checkpoint; `None` before.
    pub fn resolve(&self, cfg: &SweepConfig, out: &Path) -> Option<ResolvedHeal> {
        let h = cfg.heal.as_ref()?;
        let mut shas = Vec::new();
        for d in &self.stack.dirs {
            let c = crate::runs::CheckpointRef::resolve(&d.display().to_string()).ok()?;
            shas.push(c.sha256().ok()?);
        }
        let key = format!(
            "heal|{}|{}|{}|{}|{}|{}",
            self.stack.id,
            h.steps,
            h.arms.join(","),
            h.train_w,
            h.set.join(";"),
            shas.join(";")
        );
        let name = format!(
            "{}-heal-r{}-{}",
            cfg.name,
            self.stack.replicate.unwrap_or(0),
            &short_hash(&key)[..8]
        );
        let dir = out.join(HEAL_DIR).join(&name);
        Some(ResolvedHeal {
            done: dir.join("heal.json").is_file(),
            name,
            dir,
        })
    }

    pub fn describe(&self) -> String {
        format!("heal {}", self.stack.describe())
    }
}
