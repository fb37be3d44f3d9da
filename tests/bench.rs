//! `stacklab bench --part`: each stage timed on its own, and how the CPU threads wait.

mod common;

use common::Lab;

fn bench_json(lab: &Lab, parts: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let args = [
        "bench",
        "--config",
        "tiny",
        "--set",
        "model.n_layer=1",
        "--batch",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--json",
        "--part",
        parts,
    ];
    let mut cmd = lab.cmd(&args);
    cmd.env_remove("OMP_WAIT_POLICY")
        .env_remove("GOMP_SPINCOUNT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the stacklab binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::no_panic(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_part_is_timed_on_its_own() {
    let lab = Lab::new();
    let v = bench_json(
        &lab,
        "forward,eval,backward,muon,adamw,stack-eval,head",
        &[("_", "/bin/sh")],
    );
    let parts = v["parts"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["part"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "forward",
            "eval",
            "backward",
            "muon",
            "adamw",
            "stack-eval",
            "head"
        ]
    );
    for p in parts {
        assert!(p["ms"].as_f64().unwrap() > 0.0, "{p}");
        let stage = p["part"].as_str().unwrap();
        if stage == "muon" || stage == "adamw" {
            assert!(p["tokens_per_s"].is_null(), "{p}");
            assert_eq!(p["tokens"], 0);
        } else {
            assert_eq!(p["tokens"], 2 * 128, "{p}");
            let want = 256.0 / (p["ms"].as_f64().unwrap() / 1e3);
            let got = p["tokens_per_s"].as_f64().unwrap();
            assert!((got - want).abs() / want < 1e-9, "{p}");
            assert!(p["loss"].as_f64().unwrap().is_finite(), "{p}");
        }
    }
    // Before any optimizer step the training forward and the evaluation forward score the
    // same weights on the same tokens: the same loss.
    let (train, eval) = (
        parts[0]["loss"].as_f64().unwrap(),
        parts[1]["loss"].as_f64().unwrap(),
    );
    assert!(
        (train - eval).abs() <= 1e-6 * eval.abs(),
        "{train} vs {eval}"
    );
    // The head alone (timed after the optimizer steps changed the weights, so its loss is
    // checked above only for being finite).
    assert!(parts[6]["timed"]
        .as_str()
        .unwrap()
        .contains("chunked loss head"));
    assert!(parts[5]["timed"]
        .as_str()
        .unwrap()
        .contains("stack of two 1-block models"));
    assert_eq!(v["batch"], 2);
    assert_eq!(v["seq_len"], 128);
    // Nothing in the environment chose a wait policy or tuned malloc: stacklab's settings.
    assert_eq!(v["cpu_wait_policy"], "GOMP_SPINCOUNT=10000");
    assert!(
        v["cpu_malloc"]
            .as_str()
            .unwrap()
            .starts_with("freed memory kept for reuse"),
        "{v}"
    );
}

#[test]
fn a_wait_policy_or_malloc_tuning_in_the_environment_is_kept() {
    let lab = Lab::new();
    let v = bench_json(&lab, "adamw", &[("OMP_WAIT_POLICY", "ACTIVE")]);
    assert_eq!(v["cpu_wait_policy"], "OMP_WAIT_POLICY=ACTIVE");
    let v = bench_json(
        &lab,
        "adamw",
        &[
            ("GOMP_SPINCOUNT", "1000"),
            ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000"),
        ],
    );
    assert_eq!(v["cpu_wait_policy"], "GOMP_SPINCOUNT=1000");
    assert_eq!(v["cpu_malloc"], "glibc's default");
}

#[test]
fn parts_print_one_row_each_and_bad_parts_are_refused() {
    let lab = Lab::new();
    let text = lab.ok(&[
        "bench",
        "--config",
        "tiny",
        "--set",
        "model.n_layer=1",
        "--batch",
        "1",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--part",
        "eval",
        "--part",
        "muon",
    ]);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("eval ") || l.starts_with("muon "))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(text.contains("tokens/s"), "{text}");
    let e = lab.fails(&["bench", "--device", "cpu", "--part", "sideways"]);
    assert!(e.contains("invalid value 'sideways' for '--part"), "{e}");
    assert!(e.contains("stack-eval"), "{e}");
}
