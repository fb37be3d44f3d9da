//! The columns a report reads, checked against a results CSV's header row before any row is
//! read, so a missing column is named with the file (and the nearest header, for a typo)
//! instead of being met part-way through a table.

use std::path::Path;

use anyhow::bail;

/// A header cell as written, without surrounding spaces or a UTF-8 byte-order mark (which
/// spreadsheet programs put before the first column).
fn clean(header: &str) -> &str {
    header.trim_start_matches('\u{feff}').trim()
}

/// Refuses `headers` (the header row of the CSV at `path`) unless every `required` column
/// is among them, naming the file, the missing columns and the columns it has.
pub fn require_columns(path: &Path, headers: &[String], required: &[&str]) -> anyhow::Result<()> {
    let has = |c: &str| headers.iter().any(|h| clean(h) == c);
    let missing: Vec<&str> = required.iter().copied().filter(|c| !has(c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let what = if missing.len() == 1 {
        format!("no {names} column")
    } else {
        format!("no {names} columns")
    };
    let present: Vec<&str> = headers.iter().map(|h| clean(h)).collect();
    let has_now = if present.iter().all(|h| h.is_empty()) {
        "its header row is empty".to_string()
    } else {
        format!("its columns: {}", present.join(", "))
    };
    let hints: Vec<String> = missing
        .iter()
        .filter_map(|m| {
            present
                .iter()
                .map(|h| (strsim::damerau_levenshtein(m, h), *h))
                .filter(|(d, h)| *d > 0 && *d <= 2.max(m.len() / 4) && !h.is_empty())
                .min_by_key(|(d, _)| *d)
                .map(|(_, h)| format!("`{h}` for `{m}`?"))
        })
        .collect();
    let hint = if hints.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}", hints.join(", "))
    };
    bail!(
        "{}: the results have {what} ({has_now}){hint}",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_required_column_present_passes() {
        let h = headers(&["val_loss_stack", "use_first_layer", "norm_wte"]);
        require_columns(Path::new("r.csv"), &h, &["norm_wte", "val_loss_stack"]).unwrap();
        require_columns(Path::new("r.csv"), &h, &[]).unwrap();
        // Spaces around a header and a spreadsheet's byte-order mark do not hide a column.
        let h = headers(&["\u{feff}val_loss_stack", " norm_wte "]);
        require_columns(Path::new("r.csv"), &h, &["val_loss_stack", "norm_wte"]).unwrap();
    }

    #[test]
    fn a_missing_column_is_named_with_the_file_and_the_columns_there() {
        let p = Path::new("out/results.csv");
        let h = headers(&["use_first_layer", "val_loss_stak"]);
        let e = require_columns(p, &h, &["use_first_layer", "val_loss_stack"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "out/results.csv: the results have no `val_loss_stack` column (its columns: use_first_layer, val_loss_stak); did you mean `val_loss_stak` for `val_loss_stack`?"
        );
        let e = require_columns(p, &h, &["norm_wte", "mean_val_loss"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "out/results.csv: the results have no `norm_wte`, `mean_val_loss` columns (its columns: use_first_layer, val_loss_stak)"
        );
        let e = require_columns(p, &headers(&[""]), &["val_loss_stack"])
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("no `val_loss_stack` column (its header row is empty)"),
            "{e}"
        );
    }
}
