//! A stack's result: what `stack` prints, its `--json` object, and the row `--results`
//! appends to a CSV file (one row per run, the header written when the file is new).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::NormKind;

/// One block of the stack.
#[derive(Debug, Clone, Serialize)]
pub struct BlockEntry {
    /// The label of the model it came from (`m1`, `m2`, ...).
    pub model: String,
    /// Its index in that model.
    pub block: i64,
    pub attn_scale: f64,
    pub n_head: i64,
}

/// One part: the model it takes blocks from, and the resolved spec of that model.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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

    /// This run's values for [`CSV_COLUMNS`], in order: scalars as they are, lists joined
    /// with `;`.
    pub fn csv_values(&self) -> [String; CSV_COLUMNS.len()] {
        let join = |v: Vec<String>| v.join(";");
        let opt = |v: Option<bool>| v.map(|b| b.to_string()).unwrap_or_default();
        let norm = |n: Option<NormKind>| n.map(|n| n.to_string()).unwrap_or_default();
        let m = &self.models;
        [
            self.created_at.clone(),
            self.val_loss_stack.to_string(),
            join(self.val_losses.iter().map(|v| v.to_string()).collect()),
            self.mean_val_loss.to_string(),
            self.delta_vs_best.to_string(),
            opt(self.use_first_layer),
            opt(self.use_last_layer),
            self.norm_wte.to_string(),
            self.norm_lm_head.to_string(),
            self.norm_inter_model.to_string(),
            self.unique_model.to_string(),
            self.block_list.clone(),
            self.blocks.len().to_string(),
            join(
                self.blocks
                    .iter()
                    .map(|b| b.attn_scale.to_string())
                    .collect(),
            ),
            join(m.iter().map(|m| m.name.clone()).collect()),
            join(m.iter().map(|m| m.path.clone()).collect()),
            join(m.iter().map(|m| m.sha256.clone()).collect()),
            join(m.iter().map(|m| format!("{}:{}", m.start, m.end)).collect()),
            join(m.iter().map(|m| norm(m.trained_norm_wte)).collect()),
            join(m.iter().map(|m| norm(m.trained_norm_lm_head)).collect()),
            self.data.clone(),
            self.tokens.to_string(),
            self.seq_len.to_string(),
            self.batch.to_string(),
            self.device.clone(),
            self.warnings.join(" | "),
            self.saved.clone().unwrap_or_default(),
            self.seconds.to_string(),
        ]
    }

    /// Appends this run as one row of `path`, writing the header first when the file is new
    /// or empty; a file whose header has other columns is refused rather than mixed. Under
    /// the file's lock, so stacks finishing together write the header once and never
    /// interleave rows.
    pub fn append_csv(&self, path: &Path) -> Result<()> {
        let _lock = crate::filelock::exclusive(&crate::filelock::beside(path))?;
        let existing = check_csv(path)?;
        let mut out = String::new();
        if existing.trim().is_empty() {
            out.push_str(&CSV_COLUMNS.join(","));
            out.push('\n');
        } else if !existing.ends_with('\n') {
            out.push('\n');
        }
        let row = self
            .csv_values()
            .iter()
            .map(|v| csv_field(v))
            .collect::<Vec<_>>()
            .join(",");
        out.push_str(&row);
        out.push('\n');
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        f.write_all(out.as_bytes())
            .and_then(|_| f.sync_data())
            .with_context(|| format!("cannot append to {}", path.display()))
    }
}

/// The columns of a results file.
pub const CSV_COLUMNS: [&str; 28] = [
    "created_at",
    "val_loss_stack",
    "val_losses",
    "mean_val_loss",
    "delta_vs_best",
    "use_first_layer",
    "use_last_layer",
    "norm_wte",
    "norm_lm_head",
    "norm_inter_model",
    "unique_model",
    "block_list",
    "n_blocks",
    "attn_scales",
    "models",
    "paths",
    "sha256",
    "ranges",
    "trained_norm_wte",
    "trained_norm_lm_head",
    "data",
    "tokens",
    "seq_len",
    "batch",
    "device",
    "warnings",
    "saved",
    "seconds",
];

/// Refuses a results file whose header has other columns (before anything is computed);
/// returns its text (empty when it does not exist yet).
pub fn check_csv(path: &Path) -> Result<String> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let header = CSV_COLUMNS.join(",");
    if !existing.trim().is_empty() && existing.lines().next().map(str::trim_end) != Some(&header) {
        bail!(
            "{}: its header has other columns than stack's results; give another --results file",
            path.display()
        );
    }
    Ok(existing)
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("4.5"), "4.5");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
