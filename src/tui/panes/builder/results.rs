//! The builder's results table: every stack evaluated from the lab, read from the CSV that
//! `stack --results` appends to (`<data dir>/lab/stacks.csv`), so it persists across
//! sessions and scripts can add to it.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::stack::row::ResultsRow;
use crate::stack::spec::BlockRange;

/// The lab's results file.
pub fn results_path() -> PathBuf {
    crate::paths::data_dir().join("lab").join("stacks.csv")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub created_at: String,
    pub val_loss_stack: f64,
    pub val_losses: Vec<f64>,
    pub mean_val_loss: f64,
    pub delta_vs_best: f64,
    pub use_first_layer: String,
    pub use_last_layer: String,
    pub norms: [String; 3],
    pub block_list: String,
    pub warnings: String,
    /// The parts' checkpoint paths, bottom first (to open the stack again).
    pub paths: Vec<PathBuf>,
    /// Each part's block range; empty when the row does not record them.
    pub ranges: Vec<BlockRange>,
    /// The `ranges` field as written (to name it when it cannot be opened).
    pub ranges_text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Newest,
    StackLoss,
    Delta,
}

impl SortBy {
    pub fn next(self) -> SortBy {
        match self {
            SortBy::Newest => SortBy::StackLoss,
            SortBy::StackLoss => SortBy::Delta,
            SortBy::Delta => SortBy::Newest,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::Newest => "newest",
            SortBy::StackLoss => "stack loss",
            SortBy::Delta => "stack - best",
        }
    }
}

/// Reads the results file (none yet: no rows). A row that does not read is skipped and
/// counted, never fatal; a file that is not a results file is an error.
pub fn load(path: &Path) -> Result<(Vec<Row>, usize)> {
    let (rows, bad) = ResultsRow::read_lossy(path)?;
    let split = |v: &str| -> Vec<String> {
        v.split(';')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    let rows = rows
        .into_iter()
        .map(|r| {
            let flag = |v: Option<bool>| v.map(|b| b.to_string()).unwrap_or_default();
            // `paths` is what `stack` writes; a sweep's rows also name them `checkpoints`.
            let paths = if r.paths.is_empty() {
                &r.checkpoints
            } else {
                &r.paths
            };
            Row {
                val_loss_stack: r.val_loss_stack,
                val_losses: r
                    .val_losses
                    .split(';')
                    .filter_map(|v| v.parse().ok())
                    .collect(),
                mean_val_loss: r.mean_val_loss,
                delta_vs_best: r.delta_vs_best,
                use_first_layer: flag(r.use_first_layer),
                use_last_layer: flag(r.use_last_layer),
                norms: [r.norm_wte, r.norm_lm_head, r.norm_inter_model],
                block_list: r.block_list,
                warnings: r.warnings,
                paths: split(paths).into_iter().map(PathBuf::from).collect(),
                ranges: r
                    .ranges
                    .split(';')
                    .map(str::parse)
                    .collect::<Result<Vec<_>>>()
                    .unwrap_or_default(),
                ranges_text: r.ranges,
                created_at: r.created_at,
            }
        })
        .collect();
    Ok((rows, bad))
}

/// Refuses a results row whose ranges cannot be this stack's: unreadable, another count
/// than parts, or outside a part's blocks (`0 <= start < end <= depth`).
pub fn check_ranges(row: &Row, depths: &[i64]) -> Result<(), String> {
    let text = row.ranges_text.trim();
    if text.is_empty() {
        return Ok(());
    }
    if row.ranges.len() != depths.len() {
        return Err(format!(
            "ranges `{text}`, which are not {} half-open START:END ranges (one per part)",
            depths.len()
        ));
    }
    for (i, (r, d)) in row.ranges.iter().zip(depths).enumerate() {
        if r.start < 0 || r.start >= r.end || r.end > *d {
            return Err(format!(
                "ranges `{text}`: part {} takes blocks {}..{} of a model with {d} blocks",
                i + 1,
                r.start,
                r.end
            ));
        }
    }
    Ok(())
}

/// Sorts rows in place.
pub fn sort(rows: &mut [Row], by: SortBy) {
    match by {
        SortBy::Newest => rows.sort_by(|a, b| b.created_at.cmp(&a.created_at)),
        SortBy::StackLoss => rows.sort_by(|a, b| a.val_loss_stack.total_cmp(&b.val_loss_stack)),
        SortBy::Delta => rows.sort_by(|a, b| a.delta_vs_best.total_cmp(&b.delta_vs_best)),
    }
}

/// The best row: the one whose stack beats its best part by the most.
pub fn best(rows: &[Row]) -> Option<usize> {
    (0..rows.len()).min_by(|&a, &b| rows[a].delta_vs_best.total_cmp(&rows[b].delta_vs_best))
}
