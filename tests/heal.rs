//! `stacklab heal` on two tiny models: every arm starts where what it starts from scores
//! (the stack, the first part on itself, the better part), all arms read the same tokens,
//! the CSV and the curves are the runs' own validation rows, and a heal cut short resumes.

mod common;

use common::{assert_one_row_per_step, read_json_lines, train_pair, Lab};
use serde_json::Value;

fn last_json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

fn stack(lab: &Lab, models: &[&str]) -> Value {
    let mut args = vec!["stack", "--models"];
    args.extend_from_slice(models);
    args.extend_from_slice(&["--json", "--device", "cpu"]);
    last_json(&lab.ok(&args))
}

const HEAL: [&str; 10] = [
    "heal", "--models", "m1", "m2", "--steps", "8", "--name", "h", "--device", "cpu",
];

#[test]
fn heal_arms_start_where_they_score_read_the_same_tokens_and_resume() {
    let lab = Lab::new();
    train_pair(&lab);
    let st = stack(&lab, &["m1", "m2"]);
    let own = stack(&lab, &["m1", "m1"]);
    let best_part = st["val_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);

    // The first arm's training dies at step 6 (after its step-4 checkpoint): the heal stops.
    let out = lab
        .cmd(&HEAL)
        .env("STACKLAB_FAULT_PANIC_AT_STEP", "6")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("training h-stack failed"), "{err}");
    assert!(err.contains("run the same heal again"), "{err}");

    // The same command resumes it and trains the other arms.
    let mut args = HEAL.to_vec();
    args.push("--json");
    let r = last_json(&lab.ok(&args));
    let arms: Vec<&str> = r["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arm"].as_str().unwrap())
        .collect();
    assert_eq!(arms, ["stack", "self", "scratch", "continue"]);
    let arm = |name: &str| -> &Value {
        r["arms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["arm"] == name)
            .unwrap()
    };
    let first = |name: &str| arm(name)["points"][0]["val_loss"].as_f64().unwrap();
    for (name, want) in [
        ("stack", st["val_loss_stack"].as_f64().unwrap()),
        ("self", own["val_loss_stack"].as_f64().unwrap()),
        ("continue", best_part),
    ] {
        assert_eq!(arm(name)["points"][0]["step"], 0);
        assert!(
            (first(name) - want).abs() < 1e-5,
            "{name}: step 0 {} vs {want}",
            first(name)
        );
    }
    assert!((r["best_part_loss"].as_f64().unwrap() - best_part).abs() < 1e-12);

    let ck = lab.checkpoints();
    let mut csv_rows = Vec::new();
    let mut data_states = Vec::new();
    for name in arms {
        let run = ck.join(format!("h-{name}"));
        assert_one_row_per_step(&run, 8);
        // The curve is the run's validation rows.
        let vals: Vec<(i64, f64)> = read_json_lines(&run.join("metrics.jsonl"))
            .iter()
            .filter(|m| m["val_loss"].is_number())
            .map(|m| (m["step"].as_i64().unwrap(), m["val_loss"].as_f64().unwrap()))
            .collect();
        let curve: Vec<(i64, f64)> = arm(name)["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["step"].as_i64().unwrap(), p["val_loss"].as_f64().unwrap()))
            .collect();
        assert_eq!(curve, vals, "{name}");
        assert_eq!(curve.last().unwrap().0, 8);
        for (s, v) in &curve {
            csv_rows.push(format!("{name},h-{name},{s},{v}"));
        }
        let meta: toml::Table =
            toml::from_str(&std::fs::read_to_string(run.join("step_000008/meta.toml")).unwrap())
                .unwrap();
        data_states.push(meta["train_data"].clone());
    }
    // Every arm read the same shards in the same order to the same positions.
    assert!(
        data_states.windows(2).all(|w| w[0] == w[1]),
        "{data_states:?}"
    );

    let out = lab.path("heals/h");
    let csv = std::fs::read_to_string(out.join("heal.csv")).unwrap();
    let got: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!(
                "{},{},{},{}",
                f[0],
                f[1],
                f[2],
                f[4].parse::<f64>().unwrap()
            )
        })
        .collect();
    assert_eq!(got, csv_rows);
    let svg = std::fs::read_to_string(out.join("heal.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let text: String = doc
        .descendants()
        .filter(|n| n.is_text())
        .map(|n| n.text().unwrap())
        .collect();
    for legend in ["stack", "self", "scratch", "continue", "alone"] {
        assert!(text.contains(legend), "the figure's legend has no {legend}");
    }

    // The table, without --json.
    let table = lab.ok(&HEAL);
    assert!(table.contains("reaches the best part"), "{table}");
    for name in ["stack", "self", "scratch", "continue"] {
        assert!(table.contains(&format!("h-{name}")), "{table}");
    }
}

#[test]
fn heal_refuses_what_it_cannot_do() {
    let lab = Lab::new();
    train_pair(&lab);
    let err = lab.fails(&[
        "heal", "--models", "m1", "m2", "--steps", "6", "--device", "cpu",
    ]);
    assert!(err.contains("--steps 6: give a multiple of 4"), "{err}");
    let err = lab.fails(&[
        "heal",
        "--models",
        "m1",
        "m2",
        "--steps",
        "8",
        "--arms",
        "stack,selfish",
        "--device",
        "cpu",
    ]);
    assert!(err.contains("`selfish` is not an arm"), "{err}");
}
