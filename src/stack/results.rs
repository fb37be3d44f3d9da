//! A stack's result: what `stack` prints and its `--json` object, which the lab and the
//! sweep read back typed. The row `--results` appends is [`super::row::ResultsRow`].

use serde::{Deserialize, Serialize};

use crate::config::NormKind;

/// One block of the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockEntry {
    /// The label of the model it came from (`m1`, `m2`, ...).
    pub model: String,
    /// Its index in that model.
    pub block: i64,
    pub attn_scale: f64,
    pub n_head: i64,
}

/// One part: the model it takes blocks from, and the resolved spec of that model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub label: String,
    /// The checkpoint as stacklab names it.
    pub name: String,
    /// The resolved checkpoint folder or seed-named file.
    pub path: String,
    /// SHA-256 of the weights file.
    pub sha256: String,
    /// What the model computes: weights, outer norms and block layout (two saved stacks
    /// with the same weights and other boundary norms differ here).
    pub model_id: String,
    pub n_layer: i64,
    pub start: i64,
    pub end: i64,
    /// The norms it was trained with (`null` when unknown: a seed-named file whose
    /// metadata does not say, and no `--part-norms`).
    pub trained_norm_wte: Option<NormKind>,
    pub trained_norm_lm_head: Option<NormKind>,
    /// Where the trained norms come from: `meta.toml`, `file metadata` or `--part-norms`.
    pub trained_norms_from: Option<String>,
    /// The norms its own val loss was computed with.
    pub norm_wte: NormKind,
    pub norm_lm_head: NormKind,
    pub val_loss: f64,
    /// Whether its val loss came from the cache.
    pub cached: bool,
}

/// Everything one run of `stack` found, with the spec it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackReport {
    pub val_loss_stack: f64,
    /// Each part's own val loss, in order.
    pub val_losses: Vec<f64>,
    pub mean_val_loss: f64,
    /// The stack's loss minus the best part's.
    pub delta_vs_best: f64,
    /// The seed's flags, when the ranges are what they give (`null` for other ranges).
    pub use_first_layer: Option<bool>,
    pub use_last_layer: Option<bool>,
    pub norm_wte: NormKind,
    pub norm_lm_head: NormKind,
    pub norm_inter_model: NormKind,
    /// Whether the parts are distinct models (different model ids: weights or layout).
    pub unique_model: bool,
    /// `m1:0..11 | m2:1..12`.
    pub block_list: String,
    pub blocks: Vec<BlockEntry>,
    pub models: Vec<ModelEntry>,
    pub data: String,
    pub tokens: i64,
    pub seq_len: i64,
    pub batch: i64,
    pub device: String,
    pub warnings: Vec<String>,
    /// Where the stack was saved (`--save`), if it was.
    pub saved: Option<String>,
    pub seconds: f64,
    pub created_at: String,
}

impl StackReport {
    /// One line per distinct model: its checkpoint, depth, training norms and weights.
    fn models_text(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        let mut seen = Vec::new();
        for m in &self.models {
            if seen.contains(&m.label) {
                continue;
            }
            seen.push(m.label.clone());
            let trained = match (m.trained_norm_wte, m.trained_norm_lm_head) {
                (Some(w), Some(h)) => format!(
                    "trained with norm_wte {w}, norm_lm_head {h} ({})",
                    m.trained_norms_from.as_deref().unwrap_or("recorded")
                ),
                _ => format!(
                    "training norms unknown: own loss with norm_wte {}, norm_lm_head {}",
                    m.norm_wte, m.norm_lm_head
                ),
            };
            line(format!(
                "  {:<13} {}  ({} blocks, {trained}, sha256 {})",
                m.label,
                m.name,
                m.n_layer,
                &m.sha256[..12.min(m.sha256.len())]
            ));
        }
        s
    }

    /// The summary a person reads.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "stack           {}  ({} blocks)",
            self.block_list,
            self.blocks.len()
        ));
        s.push_str(&self.models_text());
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "norms           norm_wte {}, norm_lm_head {}, norm_inter_model {}",
            self.norm_wte, self.norm_lm_head, self.norm_inter_model
        ));
        let flags = match (self.use_first_layer, self.use_last_layer) {
            (Some(f), Some(l)) => format!("use_first_layer {f}, use_last_layer {l}"),
            _ => "explicit ranges".to_string(),
        };
        line(format!("layers          {flags}"));
        line(format!(
            "data            {} tokens (seq_len {}) of {}",
            self.tokens, self.seq_len, self.data
        ));
        line(format!("val_loss stack  {:.6}", self.val_loss_stack));
        for (i, m) in self.models.iter().enumerate() {
            line(format!(
                "  part {} {:<7} {:.6}{}",
                i + 1,
                m.label,
                m.val_loss,
                if m.cached { "  (cached)" } else { "" }
            ));
        }
        line(format!("  mean          {:.6}", self.mean_val_loss));
        let best = self
            .models
            .iter()
            .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
            .map(|m| m.label.clone())
            .unwrap_or_default();
        line(format!(
            "stack - best    {:+.6}  (best part: {best}; {})",
            self.delta_vs_best,
            if self.delta_vs_best < 0.0 {
                "the stack beats its parts"
            } else {
                "the stack does not beat its best part"
            }
        ));
        line(format!(
            "distinct        {}",
            if self.unique_model {
                "yes (different models)"
            } else {
                "no (the same model more than once: a baseline)"
            }
        ));
        if let Some(p) = &self.saved {
            line(format!("saved           {p}"));
        }
        s
    }
}
