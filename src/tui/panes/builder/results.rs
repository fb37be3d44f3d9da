//! The builder's results table: every stack evaluated from the lab, read from the CSV that
//! `stack --results` appends to (`<data dir>/lab/stacks.csv`), so it persists across
//! sessions and scripts can add to it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::stack::results::CSV_COLUMNS;
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

fn col(name: &str) -> usize {
    CSV_COLUMNS
        .iter()
        .position(|c| *c == name)
        .expect("a results column")
}

/// Reads the results file (none yet: no rows). A row that does not parse is skipped and
/// counted, never fatal.
pub fn load(path: &Path) -> Result<(Vec<Row>, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    crate::stack::results::check_csv(path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut bad = 0;
    for rec in rdr.records() {
        let Ok(rec) = rec else {
            bad += 1;
            continue;
        };
        let get = |name: &str| rec.get(col(name)).unwrap_or("").to_string();
        let num = |name: &str| get(name).parse::<f64>().ok();
        let (Some(stack), Some(mean), Some(delta)) = (
            num("val_loss_stack"),
            num("mean_val_loss"),
            num("delta_vs_best"),
        ) else {
            bad += 1;
            continue;
        };
        rows.push(Row {
            created_at: get("created_at"),
            val_loss_stack: stack,
            val_losses: get("val_losses")
                .split(';')
                .filter_map(|v| v.parse().ok())
                .collect(),
            mean_val_loss: mean,
            delta_vs_best: delta,
            use_first_layer: get("use_first_layer"),
            use_last_layer: get("use_last_layer"),
            norms: [
                get("norm_wte"),
                get("norm_lm_head"),
                get("norm_inter_model"),
            ],
            block_list: get("block_list"),
            warnings: get("warnings"),
            paths: get("paths")
                .split(';')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            ranges: get("ranges")
                .split(';')
                .map(str::parse)
                .collect::<Result<Vec<_>>>()
                .unwrap_or_default(),
            ranges_text: get("ranges"),
        });
    }
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
