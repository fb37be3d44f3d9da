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

/// Two model pairs per norm setting, two seeds each, and one explicit-range row, as a
/// sweep writes them (roles in `models`, the blocks in `ranges`).
const POOLING_CSV: &str = "\
stack_id,replicate,models,seeds,ranges,val_loss_stack,mean_val_loss,delta_vs_best,use_first_layer,use_last_layer,norm_wte,norm_lm_head,norm_inter_model,unique_model
s1,0,a;b,0;10,0:1;1:2,5.0,4.0,1.0,false,false,none,rms_norm,none,true
s1,1,a;b,1;11,0:1;1:2,5.2,4.2,1.0,false,false,none,rms_norm,none,true
s2,0,a;c,0;20,0:1;1:2,6.0,4.5,1.5,false,false,none,rms_norm,none,true
s2,1,a;c,1;21,0:1;1:2,6.4,4.7,1.7,false,false,none,rms_norm,none,true
s3,0,a;b,0;10,0:1;1:2,5.5,4.0,1.5,false,false,none,rms_norm,rms_norm,true
s3,1,a;b,1;11,0:1;1:2,5.9,4.2,1.7,false,false,none,rms_norm,rms_norm,true
s4,0,a;c,0;20,0:1;1:2,7.0,4.5,2.5,false,false,none,rms_norm,rms_norm,true
s4,1,a;c,1;21,0:1;1:2,7.2,4.7,2.5,false,false,none,rms_norm,rms_norm,true
s5,0,a;b,0;10,0:2;0:2,4.8,4.0,0.8,,,none,rms_norm,none,true
";

/// The lines of one `## TITLE` section of a tables.md.
fn section<'a>(md: &'a str, title: &str) -> Vec<&'a str> {
    let start = md.find(&format!("## {title}\n")).expect(title);
    md[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect()
}

#[test]
fn a_full_table_cell_is_one_stack_over_seeds_and_grouped_tables_say_what_they_pool() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("results.csv");
    std::fs::write(&p, POOLING_CSV).unwrap();
    let md = to_markdown(&standard_tables(&Rows::read_csv(&p).unwrap()).unwrap(), 3);
    // Written by hand from the rows above: each pair and each norm setting its own cell,
    // the explicit-range row apart with its ranges and no flags.
    let full: Vec<&str> = section(&md, "Full results")
        .into_iter()
        .filter(|l| l.starts_with("| "))
        .collect();
    assert_eq!(
        full,
        [
            "| val_loss_stack | mean_val_loss | delta_vs_best | models | ranges | use_first_layer | use_last_layer | norm_wte | norm_lm_head | norm_inter_model | unique_model | rows |",
            "| 5.100 ± 0.141 | 4.100 ± 0.141 | 1.000 ± 0.000 | a;b | 0:1;1:2 | false | false | none | rms_norm | none | true | 2 |",
            "| 5.700 ± 0.283 | 4.100 ± 0.141 | 1.600 ± 0.141 | a;b | 0:1;1:2 | false | false | none | rms_norm | rms_norm | true | 2 |",
            "| 4.800 | 4.000 | 0.800 | a;b | 0:2;0:2 | - | - | none | rms_norm | none | true | 1 |",
            "| 6.200 ± 0.283 | 4.600 ± 0.141 | 1.600 ± 0.141 | a;c | 0:1;1:2 | false | false | none | rms_norm | none | true | 2 |",
            "| 7.100 ± 0.141 | 4.600 ± 0.141 | 2.500 ± 0.000 | a;c | 0:1;1:2 | false | false | none | rms_norm | rms_norm | true | 2 |",
        ],
        "{md}"
    );
    // The norm table pools both pairs and the explicit ranges, and says so.
    let by_norm = section(&md, "Results by norm").join("\n");
    assert!(
        by_norm.contains("± spans seeds and the stacks this table pools: cells mix rows of different models, ranges, use_first_layer, use_last_layer"),
        "{by_norm}"
    );
    // (5.0 + 5.2 + 6.0 + 6.4 + 4.8) / 5 = 5.48, sample sd sqrt(1.888 / 4) = 0.687.
    assert!(
        by_norm.contains("| 5.480 ± 0.687 |")
            && by_norm.contains("| none | rms_norm | none | true | 5 |"),
        "{by_norm}"
    );
    // (5.5 + 5.9 + 7.0 + 7.2) / 4 = 6.4, sd sqrt(2.06 / 3) = 0.829.
    assert!(by_norm.contains("| 6.400 ± 0.829 |"), "{by_norm}");
    let by_layer = section(&md, "Results by layer use").join("\n");
    assert!(
        by_layer.contains("cells mix rows of different models, norm_inter_model\n")
            || by_layer.contains("cells mix rows of different models, norm_inter_model."),
        "{by_layer}"
    );
    assert!(
        md.contains("`-`: not set (explicit ranges give no flags)"),
        "{md}"
    );
}

#[test]
fn superseded_rows_are_left_out_of_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("results.csv");
    let mut text = POOLING_CSV.replace("unique_model\n", "unique_model,superseded\n");
    text = text
        .lines()
        .enumerate()
        .map(|(i, l)| match i {
            0 => l.to_string(),
            // s1's first row was computed from checkpoints since retrained.
            1 => format!("{l},true"),
            _ => format!("{l},false"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.push_str(
        "\ns1,0,a;b,0;10,0:1;1:2,5.4,4.4,1.0,false,false,none,rms_norm,none,true,false\n",
    );
    std::fs::write(&p, text).unwrap();
    let md = to_markdown(&standard_tables(&Rows::read_csv(&p).unwrap()).unwrap(), 3);
    // (5.4 + 5.2) / 2 = 5.3: the superseded 5.0 is not counted.
    assert!(
        md.contains("| 5.300 ± 0.141 | 4.300 ± 0.141 | 1.000 ± 0.000 | a;b |"),
        "{md}"
    );
    assert!(md.contains("1 superseded row(s)"), "{md}");
}

#[test]
fn a_report_on_rows_missing_a_column_names_the_column_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("seed.csv");
    // The seed's raw format without its use_first_layer column.
    std::fs::write(
        &p,
        "val_loss_stack,val_losses,use_last_layer\n8.2,\"[3.2, 3.3]\",false\n",
    )
    .unwrap();
    let e = stacklab::sweep::run::write_tables(&p, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("seed.csv") && e.contains("no `use_first_layer` column"),
        "{e}"
    );
    assert!(!dir.path().join("tables.md").exists());
}
