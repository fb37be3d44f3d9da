//! A miniature sweep end to end on the CPU: the plan, an interruption and a resume that
//! recomputes nothing, complete rows, and tables that equal the group-by of the rows.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::csv_rows as rows;
use common::Lab;

fn sweep_config(lab: &Lab) -> std::path::PathBuf {
    common::mini_sweep(
        lab,
        "mini",
        6,
        r#"
[grid]
pairs = [["m1", "m2"]]
same_model = ["m1"]
use_first_layer = [false, true]
use_last_layer = [false]
"#,
    )
}

fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e);
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        v.push(p.display().to_string());
        if p.is_dir() {
            v.extend(walk(&p));
        }
    }
    v
}

#[test]
fn a_miniature_sweep_runs_resumes_and_tabulates_its_rows() {
    let lab = Lab::new();
    let cfg = sweep_config(&lab);
    let out = lab.path("sweep-out");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "sweep".to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--device".into(),
            "cpu".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // --dry-run says what it will do and writes nothing.
    let before = listing(lab.dir.path());
    let a = args(&["--dry-run"]);
    let plan = lab.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(plan.contains("4 runs to train (4 new"), "{plan}");
    assert!(plan.contains("8 stacks to evaluate (0 already"), "{plan}");
    assert!(plan.contains("estimated time"), "{plan}");
    assert_eq!(
        listing(lab.dir.path()),
        before,
        "a dry run changed the disk"
    );

    // Interrupt it once a few rows are in, as Ctrl-C would (its own process group).
    let csv = out.join("results.csv");
    let a = args(&[]);
    let mut child = lab
        .cmd(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if csv.is_file() && rows(&csv).len() >= 2 {
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGINT);
            }
            child.wait().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let first = rows(&csv);
    assert!(first.len() >= 2);

    // Running it again finishes without recomputing what was there.
    lab.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let all = rows(&csv);
    assert_eq!(all.len(), 8);
    for (old, new) in first.iter().zip(&all) {
        assert_eq!(old["stack_id"], new["stack_id"]);
        assert_eq!(
            old["created_at"], new["created_at"],
            "a finished row was recomputed"
        );
    }
    let ids: std::collections::BTreeSet<&String> = all.iter().map(|r| &r["stack_id"]).collect();
    assert_eq!(ids.len(), 8);
    for r in &all {
        for k in [
            "val_loss_stack",
            "val_losses",
            "mean_val_loss",
            "delta_vs_best",
            "use_first_layer",
            "use_last_layer",
            "unique_model",
            "norm_mismatch",
            "seeds",
            "training_norms",
            "block_list",
            "sha256",
        ] {
            assert!(!r[k].is_empty(), "{k} empty in {r:?}");
        }
        assert_eq!(r["norm_mismatch"], "false");
        assert_eq!(r["unique_model"], (r["models"] == "m1;m2").to_string());
    }
    // A third run has nothing to do.
    let again = lab.ok(&args(&["--dry-run"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(
        again.contains("0 runs to train") && again.contains("0 stacks to evaluate (8 already"),
        "{again}"
    );

    // Every by-layer-use cell is the mean ± sample std of its rows, recomputed here.
    let md = std::fs::read_to_string(out.join("tables.md")).unwrap();
    let section = &md[md.find("## Results by layer use").unwrap()..];
    let section = &section[..section[3..]
        .find("## ")
        .map(|i| i + 3)
        .unwrap_or(section.len())];
    let mut groups: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for r in &all {
        groups
            .entry((
                r["use_first_layer"].clone(),
                r["use_last_layer"].clone(),
                r["unique_model"].clone(),
            ))
            .or_default()
            .push(r["val_loss_stack"].parse().unwrap());
    }
    assert_eq!(groups.len(), 4);
    for ((first, last, unique), v) in groups {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        let cell = format!("| {mean:.3} ± {sd:.3} |");
        let line = section
            .lines()
            .find(|l| l.contains(&format!("| {first} | {last} | {unique} |")))
            .unwrap_or_else(|| panic!("no row for {first}/{last}/{unique} in\n{section}"));
        assert!(line.starts_with(&cell), "{line} should start with {cell}");
    }
    // --report regenerates the same tables from the CSV.
    let report = lab.ok(&["sweep", "--report", out.to_str().unwrap()]);
    assert_eq!(report, md);
    for r in &all {
        assert_eq!(r["superseded"], "false");
        assert_eq!(r["config_sha256"].split(';').count(), 2, "{r:?}");
        assert_eq!(r["model_ids"].split(';').count(), 2, "{r:?}");
    }

    // A run deleted and trained again: its stacks are scored again, the old rows kept,
    // marked superseded, and left out of the tables.
    std::fs::remove_dir_all(lab.checkpoints().join("mini-m2-r0")).unwrap();
    let plan = lab.ok(&args(&["--dry-run"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(
        plan.contains("1 runs to train (1 new") && plan.contains("2 stacks to evaluate (6 already"),
        "{plan}"
    );
    lab.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let after = rows(&csv);
    assert_eq!(after.len(), 10);
    let stale: Vec<&BTreeMap<String, String>> =
        after.iter().filter(|r| r["superseded"] == "true").collect();
    assert_eq!(stale.len(), 2);
    for s in &stale {
        assert!(s["checkpoints"].contains("mini-m2-r0"), "{s:?}");
        let new: Vec<_> = after[8..]
            .iter()
            .filter(|r| r["stack_id"] == s["stack_id"])
            .collect();
        assert_eq!(new.len(), 1, "one current row replaces {s:?}");
        assert_eq!(new[0]["superseded"], "false");
    }
    let md = std::fs::read_to_string(out.join("tables.md")).unwrap();
    assert!(md.starts_with("# Results (8 rows of"), "{md}");
    assert!(md.contains("2 superseded row(s)"), "{md}");

    // One sweep per folder: a second one on the same --out refuses while the first runs.
    let held = stacklab::filelock::try_exclusive(&out.join(".sweep.lock"), "test").unwrap();
    let e = lab.fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains(&format!(
            "is in use by another stacklab process (pid {})",
            std::process::id()
        )),
        "{e}"
    );
    drop(held);
    lab.ok(&args(&["--dry-run"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
}
