//! The seed's own raw result rows (its published CSVs, with Python lists written as strings)
//! read into stacklab's columns, so the same table code runs on them: `mean_val_loss` and
//! `delta_vs_best` from `val_losses`, `models` and `unique_model` from the model ids
//! actually stacked, empty norm cells as `none`, and `norm_mismatch` where a stack's
//! `norm_wte` or `norm_lm_head` differs from the norms its models were trained with.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::tables::{Rows, NORM_MISMATCH};

/// `"[3.2, 3.3]"` or `"['a', 'b']"` into its items, unquoted.
pub fn python_list(s: &str) -> Vec<String> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|x| x.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .collect()
}

fn norm(s: &str) -> String {
    match s.trim() {
        "" | "None" | "none" => "none".into(),
        other => other.to_string(),
    }
}

/// Whether `rows` are in the seed's raw format (a `val_losses` list column).
pub fn is_seed_format(rows: &Rows) -> bool {
    rows.has("val_losses") && !rows.has("mean_val_loss")
}

/// A row's value in `column` (empty when the file has no such column).
fn cell<'a>(row: &'a BTreeMap<String, String>, column: &str) -> &'a str {
    row.get(column).map(String::as_str).unwrap_or("")
}

/// Converts the seed's rows into stacklab's columns.
pub fn from_seed_rows(seed: &Rows) -> Result<Rows> {
    if !seed.has("val_loss_stack") || !seed.has("val_losses") {
        bail!("not the seed's result rows: no val_loss_stack / val_losses columns");
    }
    let shape = SeedShape {
        ids_col: ["model_ids", "model_names"]
            .into_iter()
            .find(|c| seed.has(c)),
        norms: seed.has("norm_lm_head"),
        coconut: seed.has("coconut_everies"),
        training_norms: seed.has("norm_wtes"),
    };
    let mut out = Rows {
        columns: shape.columns().iter().map(|s| s.to_string()).collect(),
        ..Rows::default()
    };
    for (i, r) in seed.rows.iter().enumerate() {
        out.rows.push(shape.row(r, &format!("seed row {}", i + 2))?);
    }
    Ok(out)
}

/// Which of the optional columns the seed's rows have.
struct SeedShape {
    /// The column of the model ids stacked, when there is one.
    ids_col: Option<&'static str>,
    norms: bool,
    coconut: bool,
    /// The norms each model was trained with (`norm_wtes`, `norm_lm_heads`).
    training_norms: bool,
}

impl SeedShape {
    fn columns(&self) -> Vec<&'static str> {
        let mut columns = vec![
            "val_loss_stack",
            "mean_val_loss",
            "delta_vs_best",
            "use_first_layer",
            "use_last_layer",
        ];
        if self.norms {
            columns.extend(["norm_wte", "norm_lm_head", "norm_inter_model"]);
        }
        if self.ids_col.is_some() {
            columns.extend(["models", "unique_model"]);
        }
        if self.coconut {
            columns.push("coconut_every");
        }
        if self.training_norms {
            columns.extend(["training_norms", NORM_MISMATCH]);
        }
        columns
    }

    /// One seed row in stacklab's columns; `at` names it in errors.
    fn row(&self, r: &BTreeMap<String, String>, at: &str) -> Result<BTreeMap<String, String>> {
        let mut row = losses(r, at)?;
        for k in ["use_first_layer", "use_last_layer"] {
            row.insert(k.into(), cell(r, k).to_lowercase());
        }
        if self.norms {
            for k in ["norm_wte", "norm_lm_head", "norm_inter_model"] {
                row.insert(k.into(), norm(r.get(k).map(String::as_str).unwrap_or("")));
            }
        }
        if let Some(c) = self.ids_col {
            let ids = python_list(cell(r, c));
            row.insert("models".into(), ids.join(";"));
            let distinct = ids.iter().collect::<std::collections::BTreeSet<_>>().len() > 1;
            row.insert("unique_model".into(), distinct.to_string());
        }
        if self.coconut {
            let every = python_list(cell(r, "coconut_everies"));
            row.insert(
                "coconut_every".into(),
                every.first().cloned().unwrap_or_default(),
            );
        }
        if self.training_norms {
            add_training_norms(r, &mut row);
        }
        Ok(row)
    }
}

/// `val_loss_stack`, and `mean_val_loss` and `delta_vs_best` from the `val_losses` list.
fn losses(r: &BTreeMap<String, String>, at: &str) -> Result<BTreeMap<String, String>> {
    let stack: f64 = cell(r, "val_loss_stack")
        .trim()
        .parse()
        .with_context(|| at.to_string())?;
    let parts: Vec<f64> = python_list(cell(r, "val_losses"))
        .iter()
        .map(|v| v.parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| at.to_string())?;
    if parts.is_empty() {
        bail!("{at}: empty val_losses");
    }
    let mean = parts.iter().sum::<f64>() / parts.len() as f64;
    let best = parts.iter().copied().fold(f64::INFINITY, f64::min);
    let mut row = BTreeMap::new();
    row.insert("val_loss_stack".into(), stack.to_string());
    row.insert("mean_val_loss".into(), mean.to_string());
    row.insert("delta_vs_best".into(), (stack - best).to_string());
    Ok(row)
}

/// `training_norms` (each model's `wte/lm_head` norms) and whether the stack's norms
/// differ from them.
fn add_training_norms(r: &BTreeMap<String, String>, row: &mut BTreeMap<String, String>) {
    let wtes: Vec<String> = python_list(cell(r, "norm_wtes"))
        .iter()
        .map(|s| norm(s))
        .collect();
    let heads: Vec<String> = python_list(cell(r, "norm_lm_heads"))
        .iter()
        .map(|s| norm(s))
        .collect();
    // Unknown (empty) when the rows do not say which norms the stack used.
    let mismatch = match (row.get("norm_wte"), row.get("norm_lm_head")) {
        (Some(w), Some(h)) => {
            (wtes.iter().any(|x| x != w) || heads.iter().any(|x| x != h)).to_string()
        }
        _ => String::new(),
    };
    row.insert(
        "training_norms".into(),
        wtes.iter()
            .zip(&heads)
            .map(|(w, h)| format!("{w}/{h}"))
            .collect::<Vec<_>>()
            .join(" + "),
    );
    row.insert(NORM_MISMATCH.into(), mismatch);
}
