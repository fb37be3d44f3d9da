//! A sweep's `[heal]`: the chosen grid stacks of every replicate healed, `heal.csv` holding
//! each arm's own validation rows, the Healing table equal to the mean ± sd of those rows
//! over replicates (recomputed here), and a second run that heals nothing again.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::csv_rows as rows;
use common::{read_json_lines, Lab};

fn mean_sd(v: &[f64]) -> String {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
    format!("{mean:.3} ± {sd:.3}")
}

#[test]
fn a_sweep_heals_its_chosen_stacks_and_tabulates_the_arms_over_replicates() {
    let lab = Lab::new();
    let cfg = common::mini_sweep(
        &lab,
        "hl",
        6,
        r#"
[grid]
pairs = [["m1", "m2"]]
same_model = ["m1"]
use_first_layer = [false]
use_last_layer = [false, true]

[heal]
steps = 4
arms = ["stack", "continue"]
use_last_layer = [true]
"#,
    );
    let out = lab.path("sweep-out");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["sweep", "--config"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend([
            cfg.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--device".into(),
            "cpu".into(),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        lab.ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Before the parts exist the heals' names are not known: they wait for them.
    let plan = run(&["--dry-run"]);
    assert_eq!(plan.matches("  heal  pending").count(), 2, "{plan}");
    assert!(!plan.contains("same_model"), "{plan}");

    run(&[]);
    let results = rows(&out.join("results.csv"));
    let heals = rows(&out.join("heal.csv"));
    // Two replicates x two arms, each with its validations at steps 0..=4.
    let mut arms: BTreeMap<(String, String), Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    for r in &heals {
        arms.entry((r["heal"].clone(), r["arm"].clone()))
            .or_default()
            .push(r);
    }
    assert_eq!(arms.len(), 4, "{heals:?}");
    for ((heal, arm), pts) in &arms {
        let first = pts[0];
        assert_eq!(first["models"], "m1;m2");
        assert_eq!(first["use_last_layer"], "true");
        assert_eq!(first["use_first_layer"], "false");
        // The rows are the arm's run's own validation rows.
        let metrics = read_json_lines(&lab.checkpoints().join(&first["run"]).join("metrics.jsonl"));
        let vals: Vec<(i64, f64)> = metrics
            .iter()
            .filter_map(|m| Some((m["step"].as_i64()?, m["val_loss"].as_f64()?)))
            .collect();
        let ours: Vec<(i64, f64)> = pts
            .iter()
            .map(|r| (r["step"].parse().unwrap(), r["val_loss"].parse().unwrap()))
            .collect();
        assert_eq!(ours, vals, "{heal} {arm}");
        assert_eq!(ours.first().map(|p| p.0), Some(0));
        assert_eq!(ours.last().map(|p| p.0), Some(4));
        // The stack arm starts at the loss the sweep's own row gives that stack.
        let row = results
            .iter()
            .find(|r| {
                r["replicate"] == first["replicate"]
                    && r["models"] == "m1;m2"
                    && r["use_last_layer"] == "true"
            })
            .expect("the healed stack's row");
        let stack: f64 = row["val_loss_stack"].parse().unwrap();
        let healed: f64 = first["val_loss_stack"].parse().unwrap();
        assert!((stack - healed).abs() < 1e-9, "{stack} vs {healed}");
        if arm == "stack" {
            assert!((ours[0].1 - stack).abs() < 1e-5, "{} vs {stack}", ours[0].1);
        }
    }

    // Each Healing cell is the mean ± sample sd over the two replicates of heal.csv's rows.
    let md = std::fs::read_to_string(out.join("tables.md")).unwrap();
    let section = &md[md.find("## Healing").expect("a Healing table")..];
    for arm in ["stack", "continue"] {
        let at = |step: &str| -> Vec<f64> {
            heals
                .iter()
                .filter(|r| r["arm"] == arm && r["step"] == step)
                .map(|r| r["val_loss"].parse().unwrap())
                .collect()
        };
        let line = section
            .lines()
            .find(|l| l.contains(&format!("| 4 | {arm} | 2 |")))
            .unwrap_or_else(|| panic!("no {arm} line in\n{section}"));
        let want = format!(
            "| {} | {} | {} | {} |",
            mean_sd(&at("0")),
            mean_sd(&at("1")),
            mean_sd(&at("2")),
            mean_sd(&at("4"))
        );
        assert!(line.starts_with(&want), "{line}\nshould start with\n{want}");
    }

    // Run again: every heal is done and nothing is trained or healed again.
    let plan = run(&["--dry-run"]);
    assert_eq!(plan.matches("  heal  done").count(), 2, "{plan}");
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let jsons: Vec<_> = std::fs::read_dir(out.join("heal"))
        .unwrap()
        .map(|e| e.unwrap().path().join("heal.json"))
        .collect();
    assert_eq!(jsons.len(), 2);
    let before: Vec<_> = jsons.iter().map(|p| stamp(p)).collect();
    run(&[]);
    let after: Vec<_> = jsons.iter().map(|p| stamp(p)).collect();
    assert_eq!(before, after, "a finished heal was run again");
    assert_eq!(rows(&out.join("heal.csv")), heals);
    // --report reads heal.csv beside results.csv too.
    let report = lab.ok(&["sweep", "--report", out.to_str().unwrap()]);
    assert!(report.contains("## Healing"), "{report}");
}

#[test]
fn a_heal_section_that_names_no_grid_pair_is_refused_by_key() {
    let lab = Lab::new();
    let cfg = lab.write(
        "sweep-bad.toml",
        r#"
name = "bad"
train_config = "tiny"
[[models]]
name = "m1"
seeds = [0]
[[models]]
name = "m2"
from_model = "m1"
seeds = [1]
[grid]
pairs = [["m1", "m2"]]
[heal]
steps = 4
pairs = [["m2", "m1"]]
"#,
    );
    let e = lab.fails(&["sweep", "--config", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(
        e.contains("`heal.pairs`: [\"m2\", \"m1\"] is not one of the grids' pairs"),
        "{e}"
    );
    let bad_steps = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("steps = 4", "steps = 6");
    std::fs::write(&cfg, bad_steps).unwrap();
    let e = lab.fails(&["sweep", "--config", cfg.to_str().unwrap(), "--dry-run"]);
    assert!(e.contains("`heal.steps` = 6: give a multiple of 4"), "{e}");
}
