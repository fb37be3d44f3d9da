//! Tables computed from raw rows: the seed write-up's own full table reproduces itself, and
//! grouped by both layer flags it shows what the published "by layer use" table hid; the
//! seed's raw COCONUT rows reveal the duplicate "same model" rows and the norm mix-up.

mod common;

use std::collections::BTreeMap;

use common::fixtures;
use stacklab::sweep::seed_rows::from_seed_rows;
use stacklab::sweep::tables::{group_by, standard_tables, to_markdown, Rows, Table};

fn writeup(name: &str) -> Rows {
    Rows::read_csv(&fixtures().join("seed-writeup").join(name)).unwrap()
}

fn f(row: &BTreeMap<String, String>, k: &str) -> f64 {
    row[k].parse().unwrap()
}

/// Every cell equals the mean of the rows with its key values, recomputed here.
fn check_cells(rows: &Rows, t: &Table) {
    let mut covered = 0;
    for cell in &t.cells {
        let members: Vec<&BTreeMap<String, String>> = rows
            .rows
            .iter()
            .filter(|r| t.keys.iter().zip(&cell.keys).all(|(k, v)| &r[k] == v))
            .collect();
        assert_eq!(members.len(), cell.rows, "{}: {:?}", t.title, cell.keys);
        for (m, st) in t.metrics.iter().zip(&cell.stats) {
            let v: Vec<f64> = members.iter().map(|r| f(r, m)).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            assert!(
                (st.mean - mean).abs() < 1e-12,
                "{} {m} {:?}",
                t.title,
                cell.keys
            );
        }
        covered += members.len();
    }
    assert_eq!(
        covered,
        rows.rows.len(),
        "{}: every row in one cell",
        t.title
    );
}

#[test]
fn the_writeups_full_table_reproduces_itself() {
    let rows = writeup("full_table.csv");
    assert_eq!(rows.rows.len(), 24);
    let tables = standard_tables(&rows).unwrap();
    let full = &tables[0];
    assert_eq!(full.title, "Full results");
    assert_eq!(full.cells.len(), 24, "one configuration per row");
    // Same rows in the write-up's order, same numbers.
    for (cell, row) in full.cells.iter().zip(&rows.rows) {
        assert_eq!(cell.stats[0].mean, f(row, "val_loss_stack"));
        assert_eq!(cell.stats[1].mean, f(row, "mean_val_loss"));
        let keys: Vec<&String> = full.keys.iter().map(|k| &row[k]).collect();
        assert_eq!(cell.keys.iter().collect::<Vec<_>>(), keys);
    }
    for t in &tables {
        check_cells(&rows, t);
    }
    let md = to_markdown(&tables, 2);
    assert!(
        md.contains(
            "| 10.57 | 3.31 | false | false | layer_norm | layer_norm | layer_norm | false | 1 |"
        ),
        "{md}"
    );
}

#[test]
fn by_layer_use_grouped_by_both_flags_differs_where_the_writeup_erred() {
    let rows = writeup("full_table.csv");
    let published = writeup("by_layer_use.csv");
    // The published table is the grouping by use_last_layer alone ...
    let last_only = group_by(&rows, "t", &["use_last_layer"], &["val_loss_stack"]).unwrap();
    for p in &published.rows {
        let cell = last_only
            .cells
            .iter()
            .find(|c| c.keys[0] == p["use_last_layer"])
            .unwrap();
        assert!(
            (cell.stats[0].mean - f(p, "val_loss_stack")).abs() < 0.005,
            "{p:?}"
        );
    }
    // ... while grouped by both flags (and distinct/same), every one of its 8 cells differs.
    let tables = standard_tables(&rows).unwrap();
    let by_layer = tables
        .iter()
        .find(|t| t.title == "Results by layer use")
        .unwrap();
    assert_eq!(
        by_layer.keys,
        ["use_first_layer", "use_last_layer", "unique_model"]
    );
    assert_eq!(by_layer.cells.len(), 8);
    for p in &published.rows {
        let cell = by_layer
            .cells
            .iter()
            .find(|c| {
                c.keys
                    == [
                        p["use_first_layer"].clone(),
                        p["use_last_layer"].clone(),
                        p["unique_model"].clone(),
                    ]
            })
            .unwrap();
        assert!(
            (cell.stats[0].mean - f(p, "val_loss_stack")).abs() > 0.02,
            "{p:?}: {:?}",
            cell.stats[0]
        );
    }
    // For two distinct models, dropping model 2's first block matters (best norm setting).
    let full = &tables[0];
    let pick = |first: &str| {
        full.cells
            .iter()
            .find(|c| c.keys == [first, "false", "none", "rms_norm", "none", "true"])
            .unwrap()
            .stats[0]
            .mean
    };
    assert_eq!((pick("false"), pick("true")), (6.48, 8.31));
}

#[test]
fn the_seeds_raw_coconut_rows_show_duplicates_and_the_norm_mix_up() {
    let raw = Rows::read_csv(&fixtures().join("seed-results/results_coconut.csv")).unwrap();
    let rows = from_seed_rows(&raw).unwrap();
    assert_eq!(rows.rows.len(), 12);
    // The "same model twice" commands stacked two different models ...
    assert!(rows.rows.iter().all(|r| r["unique_model"] == "true"));
    // ... trained with norm_wte = rms_norm and stacked with none.
    assert!(rows
        .rows
        .iter()
        .all(|r| r["norm_wte"] == "none" && r["norm_mismatch"] == "true"));
    let tables = standard_tables(&rows).unwrap();
    let coconut = tables
        .iter()
        .find(|t| t.title == "Results with COCONUT-parallel training")
        .unwrap();
    check_cells(&rows, coconut);
    let cell = |every: &str, last: &str| {
        coconut
            .cells
            .iter()
            .find(|c| c.keys == [every, "true", last])
            .unwrap()
    };
    // The write-up's COCONUT table: 8.09 / 8.00 / 8.85 / 9.66.
    assert_eq!(format!("{:.2}", cell("100", "true").stats[0].mean), "8.09");
    assert_eq!(format!("{:.2}", cell("100", "false").stats[0].mean), "8.00");
    assert_eq!(format!("{:.2}", cell("10", "true").stats[0].mean), "8.85");
    assert_eq!(format!("{:.2}", cell("10", "false").stats[0].mean), "9.66");
    assert_eq!(cell("100", "true").rows, 4);
    let md = to_markdown(&tables, 2);
    assert!(
        md.contains("norms differ from training") && md.contains("* (4 of 4)"),
        "{md}"
    );
    // Every raw file converts.
    for name in [
        "results.csv",
        "results1xtoks_norm.csv",
        "results_5xtoks.csv",
    ] {
        let raw = Rows::read_csv(&fixtures().join("seed-results").join(name)).unwrap();
        let rows = from_seed_rows(&raw).unwrap();
        for t in standard_tables(&rows).unwrap() {
            check_cells(&rows, &t);
        }
    }
}
