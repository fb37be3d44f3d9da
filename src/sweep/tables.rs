//! Result tables computed from raw result rows (the CSV that `stack --results` and `sweep`
//! append to), never typed: the full table, results by layer use grouped by **both** flags,
//! by norm setting, distinct vs same model, and COCONUT rows. A cell of the full table is
//! one stack definition (models by role, block ranges, norms, training settings): several
//! rows in it are seeds of that one stack, never different stacks. The grouped tables pool
//! stack definitions on purpose, and each says under its heading what its ± spans. Rows
//! whose stack used norms other than the ones its models were trained with are marked;
//! rows marked `superseded` (their checkpoints were retrained) are left out.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Raw rows by column name, values as written (booleans lower-cased).
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<BTreeMap<String, String>>,
}

impl Rows {
    pub fn read_csv(path: &Path) -> Result<Rows> {
        let mut r = csv::Reader::from_path(path)
            .with_context(|| format!("cannot read results {}", path.display()))?;
        let columns: Vec<String> = r
            .headers()
            .with_context(|| format!("{}: no header row", path.display()))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut rows = Vec::new();
        for (i, rec) in r.records().enumerate() {
            let rec = rec.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
            let row = columns
                .iter()
                .zip(rec.iter())
                .map(|(c, v)| {
                    let v = match v {
                        "True" | "TRUE" => "true",
                        "False" | "FALSE" => "false",
                        other => other,
                    };
                    (c.clone(), v.to_string())
                })
                .collect();
            rows.push(row);
        }
        Ok(Rows { columns, rows })
    }

    pub fn has(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }

    fn number(&self, row: &BTreeMap<String, String>, column: &str, i: usize) -> Result<f64> {
        let v = row.get(column).map(String::as_str).unwrap_or("");
        v.trim()
            .parse()
            .with_context(|| format!("row {}: `{column}` = {v:?} is not a number", i + 2))
    }
}

/// Mean and sample standard deviation of one metric in one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: usize,
}

impl Stat {
    pub fn of(v: &[f64]) -> Stat {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n.max(1) as f64;
        let std = (n >= 2)
            .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Stat { mean, std, n }
    }

    pub fn show(&self, decimals: usize) -> String {
        match self.std {
            Some(s) => format!("{:.*} ± {:.*}", decimals, self.mean, decimals, s),
            None => format!("{:.*}", decimals, self.mean),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cell {
    pub keys: Vec<String>,
    /// One `Stat` per metric, in the table's metric order.
    pub stats: Vec<Stat>,
    pub rows: usize,
    /// Rows of the cell whose stack norms differ from the models' training norms.
    pub norm_mismatch: usize,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub title: String,
    pub keys: Vec<String>,
    pub metrics: Vec<String>,
    pub cells: Vec<Cell>,
    pub note: Option<String>,
}

/// The column that says a row's stack norms differ from its models' training norms.
pub const NORM_MISMATCH: &str = "norm_mismatch";

/// Groups rows by `keys` (cells sorted by their key values) and summarises `metrics`.
pub fn group_by(rows: &Rows, title: &str, keys: &[&str], metrics: &[&str]) -> Result<Table> {
    for k in keys.iter().chain(metrics) {
        if !rows.has(k) {
            bail!(
                "the results have no `{k}` column (columns: {})",
                rows.columns.join(", ")
            );
        }
    }
    // Per cell: each metric's values, the row count, and the rows with a norm mismatch.
    type Group = (Vec<Vec<f64>>, usize, usize);
    let mut groups: BTreeMap<Vec<String>, Group> = BTreeMap::new();
    for (i, row) in rows.rows.iter().enumerate() {
        let key: Vec<String> = keys.iter().map(|k| row[*k].clone()).collect();
        let g = groups
            .entry(key)
            .or_insert_with(|| (vec![Vec::new(); metrics.len()], 0, 0));
        for (m, values) in metrics.iter().zip(g.0.iter_mut()) {
            values.push(rows.number(row, m, i)?);
        }
        g.1 += 1;
        if row.get(NORM_MISMATCH).map(String::as_str) == Some("true") {
            g.2 += 1;
        }
    }
    Ok(Table {
        title: title.to_string(),
        keys: keys.iter().map(|s| s.to_string()).collect(),
        metrics: metrics.iter().map(|s| s.to_string()).collect(),
        cells: groups
            .into_iter()
            .map(|(keys, (values, n, mismatch))| Cell {
                keys,
                stats: values.iter().map(|v| Stat::of(v)).collect(),
                rows: n,
                norm_mismatch: mismatch,
            })
            .collect(),
        note: None,
    })
}

/// The columns that define a stack, which a full table distinguishes, when present:
/// which models (by role in a sweep, by name otherwise), which blocks of each, the flags
/// that gave those blocks (empty for explicit ranges), the norms, and how the models were
/// trained.
const CONFIG: [&str; 11] = [
    "models",
    "ranges",
    "use_first_layer",
    "use_last_layer",
    "norm_wte",
    "norm_lm_head",
    "norm_inter_model",
    "unique_model",
    "coconut_every",
    "coconut_mode",
    "training_norms",
];

/// The column that marks a row whose checkpoints were retrained since it was computed.
pub const SUPERSEDED: &str = "superseded";

/// What a grouped table's ± spans: seeds only, or seeds and the stack definition columns
/// (of `full`) whose values differ inside one of its cells.
fn spans_note(rows: &Rows, t: &Table, full: &[&str]) -> String {
    let pooled: Vec<&str> = full
        .iter()
        .copied()
        .filter(|c| !t.keys.iter().any(|k| k == c))
        .filter(|c| {
            let mut seen: BTreeMap<Vec<&str>, &str> = BTreeMap::new();
            rows.rows.iter().any(|r| {
                let key: Vec<&str> = t.keys.iter().map(|k| r[k].as_str()).collect();
                let v = r[*c].as_str();
                *seen.entry(key).or_insert(v) != v
            })
        })
        .collect();
    if pooled.is_empty() {
        "± spans seeds only (each cell is one stack definition)".to_string()
    } else {
        format!(
            "± spans seeds and the stacks this table pools: cells mix rows of different {}",
            pooled.join(", ")
        )
    }
}

/// The standard tables of a stacking experiment, for whichever columns the rows have.
pub fn standard_tables(rows: &Rows) -> Result<Vec<Table>> {
    let metrics: Vec<&str> = ["val_loss_stack", "mean_val_loss", "delta_vs_best"]
        .into_iter()
        .filter(|m| rows.has(m))
        .collect();
    if !metrics.contains(&"val_loss_stack") {
        bail!("the results have no `val_loss_stack` column: not stack results");
    }
    let mut current = rows.clone();
    current
        .rows
        .retain(|r| r.get(SUPERSEDED).map(String::as_str) != Some("true"));
    let left_out = rows.rows.len() - current.rows.len();
    let rows = &current;
    let full = present(rows, &CONFIG);
    let mut t = group_by(rows, "Full results", &full, &metrics)?;
    let mut note = "one cell per stack definition (models, block ranges, flags, norms, training); with several rows (seeds of that stack) the mean ± sample standard deviation; `-`: not set (explicit ranges give no flags)".to_string();
    if left_out > 0 {
        note.push_str(&format!(
            "; {left_out} superseded row(s) (computed from checkpoints since retrained) left out"
        ));
    }
    t.note = Some(note);
    let mut out = vec![t];
    for mut t in grouped_tables(rows, &metrics)? {
        let spans = spans_note(rows, &t, &full);
        t.note = Some(match t.note.take() {
            Some(n) => format!("{n}; {spans}"),
            None => spans,
        });
        out.push(t);
    }
    Ok(out)
}

/// The columns of `cols` that `rows` have.
fn present(rows: &Rows, cols: &[&'static str]) -> Vec<&'static str> {
    cols.iter().copied().filter(|c| rows.has(c)).collect()
}

/// The tables grouped by one aspect (layer use, norms, distinct models, COCONUT), those
/// the rows have the columns for.
fn grouped_tables(rows: &Rows, metrics: &[&str]) -> Result<Vec<Table>> {
    let mut grouped = Vec::new();
    let by_layer = present(rows, &["use_first_layer", "use_last_layer", "unique_model"]);
    if by_layer.len() >= 2 {
        let mut t = group_by(rows, "Results by layer use", &by_layer, metrics)?;
        t.note = Some("grouped by both flags (use_first_layer: model 2's first block; use_last_layer: model 1's last block)".into());
        grouped.push(t);
    }
    let by_norm = present(
        rows,
        &[
            "norm_wte",
            "norm_lm_head",
            "norm_inter_model",
            "unique_model",
        ],
    );
    if by_norm.len() >= 2 {
        grouped.push(group_by(rows, "Results by norm", &by_norm, metrics)?);
    }
    if rows.has("unique_model") {
        grouped.push(group_by(
            rows,
            "Distinct vs same model",
            &["unique_model"],
            metrics,
        )?);
    }
    if rows.has("coconut_every")
        && rows
            .rows
            .iter()
            .any(|r| !matches!(r["coconut_every"].as_str(), "" | "0"))
    {
        let keys = present(
            rows,
            &[
                "coconut_every",
                "coconut_mode",
                "use_first_layer",
                "use_last_layer",
            ],
        );
        grouped.push(group_by(
            rows,
            "Results with COCONUT-parallel training",
            &keys,
            metrics,
        )?);
    }
    Ok(grouped)
}

/// The tables as Markdown; a cell with rows whose norms differ from training is marked `*`.
pub fn to_markdown(tables: &[Table], decimals: usize) -> String {
    let mut s = String::new();
    for t in tables {
        s.push_str(&format!("## {}\n\n", t.title));
        if let Some(n) = &t.note {
            s.push_str(&format!("{n}.\n\n"));
        }
        let mut header: Vec<String> = t.metrics.clone();
        header.extend(t.keys.iter().cloned());
        header.push("rows".into());
        let any_mismatch = t.cells.iter().any(|c| c.norm_mismatch > 0);
        if any_mismatch {
            header.push("norms differ from training".into());
        }
        s.push_str(&format!("| {} |\n", header.join(" | ")));
        let align: Vec<&str> = header
            .iter()
            .enumerate()
            .map(|(i, _)| if i < t.metrics.len() { "---:" } else { ":---" })
            .collect();
        s.push_str(&format!("|{}|\n", align.join("|")));
        for c in &t.cells {
            let mut cols: Vec<String> = c.stats.iter().map(|st| st.show(decimals)).collect();
            cols.extend(c.keys.iter().map(|k| {
                if k.is_empty() {
                    "-".into()
                } else {
                    k.replace('|', "\\|")
                }
            }));
            cols.push(c.rows.to_string());
            if any_mismatch {
                cols.push(if c.norm_mismatch > 0 {
                    format!("* ({} of {})", c.norm_mismatch, c.rows)
                } else {
                    String::new()
                });
            }
            s.push_str(&format!("| {} |\n", cols.join(" | ")));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_the_mean_and_sample_std() {
        let s = Stat::of(&[1.0, 2.0, 3.0]);
        assert_eq!((s.mean, s.std, s.n), (2.0, Some(1.0), 3));
        assert_eq!(Stat::of(&[4.0]).std, None);
        assert_eq!(s.show(2), "2.00 ± 1.00");
    }
}
