//! Stacks end to end: losses against the seed's ModelStack in PyTorch (fixtures made by
//! tests/fixtures/make_reference.py), shorthands and ranges, one-pass part losses against
//! `eval`, the loss cache, refusals and warnings by their text, saved stacks, results files.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, micro_config, read_json, Lab};
use serde_json::Value;
use stacklab::config::NormKind;
use stacklab::model::weights::{load_seed_file, SeedOptions};
use stacklab::model::Compute;
use stacklab::stack::assemble::{assemble, check, PartView};
use stacklab::stack::spec::{flag_ranges, StackNorms};
use tch::{Device, Kind, Tensor};

fn model_path(name: &str) -> String {
    fixtures()
        .join(format!("stack_model_{name}.safetensors"))
        .display()
        .to_string()
}

fn val() -> String {
    fixtures().join("stack_val.bin").display().to_string()
}

/// The fixtures' first batch: 4 sequences of 32 tokens.
const DATA_ARGS: [&str; 6] = ["--tokens", "128", "--seq-len", "32", "--batch", "4"];

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Runs `stack ... --json` and returns the object on the last line of stdout.
fn stack_json(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["stack"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", "--device", "cpu"]);
    let out = lab.ok(&all);
    serde_json::from_str(out.lines().last().expect("a JSON line")).unwrap()
}

/// `stack` on fixture models and the fixture data, with extra arguments.
fn fixture_stack(lab: &Lab, models: &[&str], extra: &[&str]) -> Value {
    let paths: Vec<String> = models.iter().map(|m| model_path(m)).collect();
    let data = val();
    let mut args = vec!["--models"];
    args.extend(paths.iter().map(String::as_str));
    args.extend_from_slice(&["--data", &data]);
    args.extend_from_slice(&DATA_ARGS);
    args.extend_from_slice(extra);
    stack_json(lab, &args)
}

fn reference() -> Value {
    read_json(&fixtures().join("stack_losses.json"))
}

fn norm(v: &Value) -> NormKind {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn stack_losses_match_the_seeds_model_stack() {
    stacklab::device::init();
    let r = reference();
    let (b, t) = (r["batch"].as_i64().unwrap(), r["seq_len"].as_i64().unwrap());
    let shard = stacklab::data::Shard::open(Path::new(&val())).unwrap();
    let tokens = shard.window_i64(0, (b * t + 1) as usize);
    let all = Tensor::from_slice(&tokens);
    let x = all.narrow(0, 0, b * t).view([b, t]);
    let y = all.narrow(0, 1, b * t).view([b, t]);
    let opts = SeedOptions {
        seq_len: Some(t),
        ..SeedOptions::default()
    };
    let load = |n: &str| load_seed_file(Path::new(&model_path(n)), &opts, Device::Cpu).unwrap();
    let models = [("a", load("a")), ("b", load("b")), ("c", load("c"))];
    let get = |n: &str| &models.iter().find(|(m, _)| *m == n).unwrap().1;
    for (name, m) in &models {
        let got = tch::no_grad(|| m.loss(&x, &y, Compute::Fp32).double_value(&[]));
        let want = r["own_losses"][name].as_f64().unwrap();
        assert!(rel(got, want) < 1e-5, "{name}: {got} vs {want}");
    }
    let rows = r["losses"].as_array().unwrap();
    assert_eq!(rows.len(), 5 * 4 * 3);
    for row in rows {
        let names: Vec<&str> = row["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let depths: Vec<i64> = names.iter().map(|n| get(n).blocks.len() as i64).collect();
        let ranges = flag_ranges(
            row["use_first_layer"].as_bool().unwrap(),
            row["use_last_layer"].as_bool().unwrap(),
            &depths,
        );
        let parts: Vec<PartView> = names
            .iter()
            .zip(&ranges)
            .map(|(n, &range)| PartView {
                label: n,
                name: n,
                model: get(n),
                range,
                trained_norms: None,
            })
            .collect();
        check(&parts, true).unwrap();
        let norms = StackNorms {
            norm_wte: norm(&row["norm_wte"]),
            norm_lm_head: norm(&row["norm_lm_head"]),
            norm_inter_model: norm(&row["norm_inter_model"]),
        };
        let stack = assemble(&parts, &norms, t);
        assert_eq!(
            stack.model.blocks.len() as i64,
            row["blocks"].as_i64().unwrap()
        );
        let got = tch::no_grad(|| stack.model.loss(&x, &y, Compute::Fp32).double_value(&[]));
        let want = row["loss"].as_f64().unwrap();
        assert!(
            rel(got, want) < 1e-5,
            "{row}: stacklab {got} vs PyTorch {want} (relative {:e})",
            rel(got, want)
        );
    }
}

#[test]
fn the_stack_command_gives_the_reference_losses_and_keeps_each_blocks_scale() {
    let lab = Lab::new();
    let r = reference();
    let find = |names: &[&str], f: bool, l: bool, norms: (&str, &str, &str)| -> f64 {
        r["losses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| {
                row["models"] == serde_json::json!(names)
                    && row["use_first_layer"] == f
                    && row["use_last_layer"] == l
                    && row["norm_wte"] == norms.0
                    && row["norm_lm_head"] == norms.1
                    && row["norm_inter_model"] == norms.2
            })
            .unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    for (names, f, l, norms) in [
        (&["a", "b"][..], false, false, ("none", "rms_norm", "none")),
        (&["a", "a"][..], true, true, ("none", "rms_norm", "none")),
        (
            &["a", "c"][..],
            false,
            true,
            ("rms_norm", "rms_norm", "rms_norm"),
        ),
        (
            &["a", "c", "b"][..],
            false,
            false,
            ("none", "layer_norm", "layer_norm"),
        ),
    ] {
        let mut extra = vec![
            "--norm-wte",
            norms.0,
            "--norm-lm-head",
            norms.1,
            "--norm-inter-model",
            norms.2,
        ];
        if f {
            extra.push("--use-first-layer");
        }
        if l {
            extra.push("--use-last-layer");
        }
        let v = fixture_stack(&lab, names, &extra);
        let want = find(names, f, l, norms);
        let got = v["val_loss_stack"].as_f64().unwrap();
        assert!(
            rel(got, want) < 1e-5,
            "{names:?} {f} {l} {norms:?}: {got} vs {want}"
        );
        assert_eq!(v["use_first_layer"], f);
        assert_eq!(v["use_last_layer"], l);
        assert_eq!(v["tokens"], 128);
        assert_eq!(v["seq_len"], 32);
        assert_eq!(v["unique_model"], names[0] != names[1]);
        assert_eq!(v["val_losses"].as_array().unwrap().len(), names.len());
    }
    // a (2 blocks) under c (4 blocks): every block keeps its own model's 1/sqrt(2·n_layer).
    let v = fixture_stack(&lab, &["a", "c"], &[]);
    assert_eq!(v["block_list"], "m1:0..1 | m2:1..4");
    let scales: Vec<(String, i64, f64)> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["model"].as_str().unwrap().to_string(),
                b["block"].as_i64().unwrap(),
                b["attn_scale"].as_f64().unwrap(),
            )
        })
        .collect();
    let (s2, s4) = (1.0 / 4f64.sqrt(), 1.0 / 8f64.sqrt());
    assert_eq!(
        scales,
        vec![
            ("m1".into(), 0, s2),
            ("m2".into(), 1, s4),
            ("m2".into(), 2, s4),
            ("m2".into(), 3, s4)
        ]
    );
    for key in [
        "val_loss_stack",
        "val_losses",
        "mean_val_loss",
        "delta_vs_best",
        "use_first_layer",
        "use_last_layer",
        "norm_wte",
        "norm_lm_head",
        "norm_inter_model",
        "unique_model",
        "blocks",
        "models",
        "tokens",
        "seq_len",
        "warnings",
        "seconds",
    ] {
        assert!(v.get(key).is_some(), "--json lacks {key}: {v}");
    }
    let m = &v["models"][1];
    assert_eq!(
        m["path"],
        std::fs::canonicalize(model_path("c"))
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(m["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(m["trained_norm_wte"], Value::Null);
    let losses: Vec<f64> = v["val_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let own = &r["own_losses"];
    assert!(rel(losses[0], own["a"].as_f64().unwrap()) < 1e-5);
    assert!(rel(losses[1], own["c"].as_f64().unwrap()) < 1e-5);
    let mean = (losses[0] + losses[1]) / 2.0;
    assert!(rel(v["mean_val_loss"].as_f64().unwrap(), mean) < 1e-12);
    let delta = v["val_loss_stack"].as_f64().unwrap() - losses[0].min(losses[1]);
    assert!((v["delta_vs_best"].as_f64().unwrap() - delta).abs() < 1e-12);
}

#[test]
fn shorthands_and_explicit_ranges_give_the_same_stack() {
    let lab = Lab::new();
    // a has 2 blocks, c has 4.
    for (flags, ranges) in [
        (&[][..], "0:1,1:4"),
        (&["--use-first-layer"][..], "0:1,0:4"),
        (&["--use-last-layer"][..], "0:2,1:4"),
        (&["--use-first-layer", "--use-last-layer"][..], "0:2,0:4"),
    ] {
        let by_flags = fixture_stack(&lab, &["a", "c"], flags);
        let by_ranges = fixture_stack(&lab, &["a", "c"], &["--ranges", ranges]);
        assert_eq!(by_flags["block_list"], by_ranges["block_list"], "{ranges}");
        assert_eq!(by_flags["blocks"], by_ranges["blocks"], "{ranges}");
        assert_eq!(
            by_flags["val_loss_stack"], by_ranges["val_loss_stack"],
            "{ranges}"
        );
        // Ranges the flags give are reported with the flags' values.
        assert_eq!(by_flags["use_first_layer"], by_ranges["use_first_layer"]);
        assert_eq!(by_flags["use_last_layer"], by_ranges["use_last_layer"]);
    }
    // Other ranges: no flag values, and the same model may repeat (mergekit-style slices).
    let v = fixture_stack(&lab, &["c", "a", "c"], &["--ranges", "0:3,0:2,2:4"]);
    assert_eq!(v["block_list"], "m1:0..3 | m2:0..2 | m1:2..4");
    assert_eq!(v["use_first_layer"], Value::Null);
    assert_eq!(v["blocks"].as_array().unwrap().len(), 7);
    assert_eq!(v["unique_model"], true);
}

/// A seed-named file of random weights with the given shape.
fn random_seed_file(path: &Path, vocab: i64, width: i64, n_layer: i64) {
    stacklab::device::init();
    let r = |s: &[i64]| Tensor::randn(s, (Kind::Float, Device::Cpu)) * 0.05;
    let mut list = vec![("lm_head.weight".to_string(), r(&[vocab, width]))];
    for i in 0..n_layer {
        let h = format!("transformer.h.{i}");
        list.push((format!("{h}.attn.c_attn.weight"), r(&[3 * width, width])));
        list.push((format!("{h}.attn.c_proj.weight"), r(&[width, width])));
        list.push((format!("{h}.mlp.c_fc.weight"), r(&[4 * width, width])));
        list.push((format!("{h}.mlp.c_proj.weight"), r(&[width, 4 * width])));
    }
    Tensor::write_safetensors(&list, path).unwrap();
}

fn fails_with(lab: &Lab, args: &[&str], text: &str) {
    let mut all = vec!["stack"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--device", "cpu"]);
    let e = lab.fails(&all);
    assert!(e.contains(text), "stack {args:?}:\n{e}\nlacks: {text}");
}

#[test]
fn what_cannot_stack_is_refused_with_the_checkpoint_and_the_numbers() {
    let lab = Lab::new();
    let (a, b, data) = (model_path("a"), model_path("b"), val());
    let wide = lab.path("wide.safetensors");
    random_seed_file(&wide, 256, 128, 2);
    let other_vocab = lab.path("vocab300.safetensors");
    random_seed_file(&other_vocab, 300, 64, 2);
    let (wide, other_vocab) = (
        wide.display().to_string(),
        other_vocab.display().to_string(),
    );
    let d = ["--data", data.as_str()];
    let with = |models: &[&str], extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--models".into()];
        v.extend(models.iter().map(|s| s.to_string()));
        v.extend(d.iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (with(&[&a], &[]), "a stack needs at least two parts, got 1".into()),
        (
            with(&[&a, &wide], &[]),
            format!("cannot stack m2 (`{wide}`) (width 128, vocabulary 256) on m1 (`{a}`) (width 64, vocabulary 256): the parts of a stack need the same width and vocabulary"),
        ),
        (
            with(&[&a, &other_vocab], &[]),
            format!("cannot stack m2 (`{other_vocab}`) (width 64, vocabulary 300) on m1 (`{a}`) (width 64, vocabulary 256)"),
        ),
        (
            with(&[&a, &b], &["--ranges", "0:2,1:3"]),
            format!("m2 (`{b}`): block range [1, 3) is out of bounds: the model has 2 blocks (0..2), so a range needs 0 <= start < end <= 2 (ranges are half-open [start, end))"),
        ),
        (
            with(&[&a, &b], &["--ranges", "2:1,0:2"]),
            format!("m1 (`{a}`): block range [2, 1) is reversed: ranges are half-open [start, end) with start < end; the model has 2 blocks (0..2)"),
        ),
        (
            with(&[&a, &b], &["--ranges", "0:2,1:1"]),
            format!("m2 (`{b}`): block range [1, 1) is empty: ranges are half-open [start, end) and hold end - start blocks; the model has 2 blocks (0..2)"),
        ),
        (
            with(&[&a, &b], &["--ranges=-1:2,0:2"]),
            "block range [-1, 2) is out of bounds".into(),
        ),
        (
            with(&[&a, &b], &["--ranges", "0:2"]),
            "1 block ranges for 2 models: give one start:end range per model".into(),
        ),
        (
            with(&[&a, &b], &["--ranges", "0-2,0:2"]),
            "range `0-2`: expected start:end".into(),
        ),
        (
            with(&[&a, &b], &["--ranges", "0:2,0:2", "--use-last-layer"]),
            "--ranges replace --use-first-layer and --use-last-layer".into(),
        ),
        (
            with(&[&a, &b], &["--norm-inter-model", "batch_norm"]),
            "unknown norm `batch_norm`".into(),
        ),
        (
            vec!["--models".into(), a.clone(), b.clone()],
            "a seed-format file does not say which data it was trained on; give --data GLOB".into(),
        ),
        (
            with(&[&a, "no-such-model"], &[]),
            "checkpoint `no-such-model` not found".into(),
        ),
        (vec![], "give the models to stack with --models A B".into()),
    ];
    for (args, text) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_with(&lab, &args, &text);
    }
    // A model with one block has nothing left once the seed's flags cut it.
    let one = lab.path("one.safetensors");
    random_seed_file(&one, 256, 64, 1);
    let one = one.display().to_string();
    fails_with(
        &lab,
        &["--models", &one, &a, "--data", &data],
        &format!("m1 (`{one}`): block range [0, 0) is empty"),
    );
    fails_with(
        &lab,
        &["--models", &one, &a, "--data", &data],
        "without use_last_layer a part before the last loses its last one",
    );
}

#[test]
fn parts_with_another_w_are_warned_about_on_stderr_and_in_json() {
    let lab = Lab::new();
    let other = fixtures().join("reference_model.safetensors");
    let (a, data) = (model_path("a"), val());
    let mut args = vec![
        "stack",
        "--models",
        &a,
        other.to_str().unwrap(),
        "--data",
        &data,
    ];
    args.extend_from_slice(&DATA_ARGS);
    args.extend_from_slice(&["--json", "--device", "cpu"]);
    let out = lab.run(&args);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "warning: m2 (`{}`) and m1 (`{a}`) do not share the same W: relative difference |W_m2 - W_m1| / |W_m1| = ",
        other.display()
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("this is not a shared-embedding stack"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    // Besides the one saying the seed-format files' training norms are unknown.
    let w: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .filter(|w| !w.contains("training norms of"))
        .collect();
    assert_eq!(w.len(), 1, "{v}");
    assert!(w[0].contains("do not share the same W"));
    // b shares a's W: no warning (but the unknown training norms).
    let v = fixture_stack(&lab, &["a", "b"], &[]);
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v}");
    assert!(w[0]
        .as_str()
        .unwrap()
        .starts_with("the training norms of m1 (`"));
}

/// `stack` with the cache in a data dir of the test's own.
fn stack_in(lab: &Lab, data_dir: &Path, models: &[&str], extra: &[&str]) -> Value {
    let data = val();
    let mut args = vec!["stack", "--models"];
    args.extend_from_slice(models);
    args.extend_from_slice(&["--data", &data]);
    args.extend_from_slice(&DATA_ARGS);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--json", "--device", "cpu"]);
    let out = lab
        .cmd(&args)
        .env("STACKLAB_DATA_DIR", data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn cached(v: &Value) -> Vec<bool> {
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cached"].as_bool().unwrap())
        .collect()
}

#[test]
fn parts_losses_are_cached_and_a_changed_checkpoint_invalidates_them() {
    let lab = Lab::new();
    let data_dir = lab.path("data");
    let a = model_path("a");
    let b = lab.path("b.safetensors");
    std::fs::copy(model_path("b"), &b).unwrap();
    let b = b.display().to_string();
    let first = stack_in(&lab, &data_dir, &[&a, &b], &[]);
    assert_eq!(cached(&first), [false, false]);
    let again = stack_in(&lab, &data_dir, &[&a, &b], &["--use-last-layer"]);
    assert_eq!(cached(&again), [true, true]);
    assert_eq!(again["val_losses"], first["val_losses"]);
    let fresh = stack_in(&lab, &data_dir, &[&a, &b], &["--no-cache"]);
    assert_eq!(cached(&fresh), [false, false]);
    assert_eq!(fresh["val_losses"], first["val_losses"]);
    assert_eq!(fresh["val_loss_stack"], first["val_loss_stack"]);
    assert!(data_dir.join("loss-cache").read_dir().unwrap().count() >= 2);
    // Other norms are another key (a seed-named file's own loss takes the norms given).
    let other = stack_in(&lab, &data_dir, &[&a, &b], &["--norm-wte", "rms_norm"]);
    assert_eq!(cached(&other), [false, false]);
    // Rewriting b's file (here with c's weights) makes its cached loss stale.
    std::fs::copy(model_path("c"), &b).unwrap();
    let changed = stack_in(&lab, &data_dir, &[&a, &b], &[]);
    assert_eq!(cached(&changed), [true, false]);
    let own_c = reference()["own_losses"]["c"].as_f64().unwrap();
    assert!(rel(changed["val_losses"][1].as_f64().unwrap(), own_c) < 1e-5);
}

#[test]
fn a_spec_file_records_the_stack_and_reproduces_it() {
    let lab = Lab::new();
    let spec = lab.path("s.toml");
    let v = fixture_stack(
        &lab,
        &["a", "c"],
        &[
            "--use-first-layer",
            "--norm-inter-model",
            "rms_norm",
            "--save-spec",
            spec.to_str().unwrap(),
        ],
    );
    let text = std::fs::read_to_string(&spec).unwrap();
    let c = std::fs::canonicalize(model_path("c")).unwrap();
    assert!(
        text.contains(&format!("model = \"{}\"", c.display())),
        "{text}"
    );
    assert!(
        text.contains(v["models"][1]["sha256"].as_str().unwrap()),
        "{text}"
    );
    assert!(
        text.contains("use_first_layer = true") && text.contains("norm_inter_model = \"rms_norm\""),
        "{text}"
    );
    let data = val();
    let mut args = vec!["--spec", spec.to_str().unwrap(), "--data", &data];
    args.extend_from_slice(&DATA_ARGS);
    let again = stack_json(&lab, &args);
    assert_eq!(again["val_loss_stack"], v["val_loss_stack"]);
    assert_eq!(again["block_list"], v["block_list"]);
    // A spec with explicit ranges; norms on the command line override the file's.
    let ranges = lab.write(
        "r.toml",
        &format!(
            "norm_lm_head = \"layer_norm\"\n[[parts]]\nmodel = \"{}\"\nstart = 0\nend = 2\n[[parts]]\nmodel = \"{}\"\nstart = 1\nend = 3\n",
            model_path("a"),
            model_path("c")
        ),
    );
    let mut args = vec![
        "--spec",
        ranges.to_str().unwrap(),
        "--data",
        &data,
        "--norm-lm-head",
        "rms_norm",
    ];
    args.extend_from_slice(&DATA_ARGS);
    let v = stack_json(&lab, &args);
    assert_eq!(v["block_list"], "m1:0..2 | m2:1..3");
    assert_eq!(v["norm_lm_head"], "rms_norm");
    fails_with(
        &lab,
        &[
            "--spec",
            ranges.to_str().unwrap(),
            "--models",
            &model_path("a"),
        ],
        "leave out --models, --ranges",
    );
    // A spec whose model changed since it was written says so.
    let copy = lab.path("a.safetensors");
    std::fs::copy(model_path("a"), &copy).unwrap();
    let pinned = lab.path("pinned.toml");
    let mut args = vec!["--models", copy.to_str().unwrap(), copy.to_str().unwrap()];
    args.extend_from_slice(&["--data", &data, "--save-spec", pinned.to_str().unwrap()]);
    args.extend_from_slice(&DATA_ARGS);
    stack_json(&lab, &args);
    std::fs::copy(model_path("b"), &copy).unwrap();
    let mut args = vec!["--spec", pinned.to_str().unwrap(), "--data", &data];
    args.extend_from_slice(&DATA_ARGS);
    let v = stack_json(&lab, &args);
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("is not the file the spec recorded"),
        "{v}"
    );
}

#[test]
fn a_saved_stack_is_a_checkpoint_eval_and_stack_load() {
    let lab = Lab::new();
    let dir = lab.path("saved/a-over-c");
    // Seed-format files do not say what they trained on: a saved stack must be told.
    let train = fixtures()
        .join("reference_train_*.bin")
        .display()
        .to_string();
    let e = lab.fails(&[
        "stack",
        "--models",
        &model_path("a"),
        &model_path("c"),
        "--data",
        &val(),
        "--save",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(e.contains("give --train-data GLOB"), "{e}");
    assert!(!dir.exists());
    let v = fixture_stack(
        &lab,
        &["a", "c"],
        &[
            "--use-last-layer",
            "--save",
            dir.to_str().unwrap(),
            "--train-data",
            &train,
        ],
    );
    assert_eq!(v["saved"], dir.display().to_string());
    let meta: toml::Table = std::fs::read_to_string(dir.join("meta.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let blocks = meta["blocks"].as_array().unwrap();
    let sources: Vec<&str> = blocks
        .iter()
        .map(|b| b["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["m1:0", "m1:1", "m2:1", "m2:2", "m2:3"]);
    assert_eq!(blocks[0]["attn_scale"].as_float().unwrap(), 0.5);
    assert_eq!(
        blocks[4]["attn_scale"].as_float().unwrap(),
        1.0 / 8f64.sqrt()
    );
    assert!(!dir.join("optimizer.safetensors").exists());
    // Its config records the training shards and the val shards scored, never one for both.
    let cfg: toml::Table = std::fs::read_to_string(dir.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cfg["data"]["train"].as_str(), Some(train.as_str()));
    assert_eq!(cfg["data"]["val"].as_str(), Some(val().as_str()));
    // eval finds the data and tokens the stack was scored on by default.
    let out = lab.ok(&[
        "eval",
        "--checkpoint",
        dir.to_str().unwrap(),
        "--batch",
        "4",
        "--json",
        "--device",
        "cpu",
    ]);
    let e: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(e["tokens"], 128);
    let (got, want) = (
        e["val_loss"].as_f64().unwrap(),
        v["val_loss_stack"].as_f64().unwrap(),
    );
    assert!(rel(got, want) < 1e-9, "eval {got} vs stack {want}");
    // The saved stack is a model like any other: a part of a new stack.
    let w = stack_json(
        &lab,
        &[
            "--models",
            dir.to_str().unwrap(),
            &model_path("b"),
            "--ranges",
            "0:5,0:2",
            "--batch",
            "4",
        ],
    );
    assert!(
        rel(w["val_losses"][0].as_f64().unwrap(), want) < 1e-9,
        "{w}"
    );
    assert_eq!(
        w["blocks"][4]["attn_scale"].as_f64().unwrap(),
        1.0 / 8f64.sqrt()
    );
    // Never over an existing folder.
    fails_with(
        &lab,
        &[
            "--models",
            &model_path("a"),
            &model_path("b"),
            "--data",
            &val(),
            "--save",
            dir.to_str().unwrap(),
        ],
        "already exists: give a new folder to save into",
    );
}

/// Splits a CSV line into fields, honouring quotes.
fn csv_split(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn results_append_one_row_per_run_under_one_header() {
    let lab = Lab::new();
    let csv = lab.path("results/stacks.csv");
    let other = fixtures().join("reference_model.safetensors");
    let mut rows = Vec::new();
    for extra in [&["--use-last-layer"][..], &["--norm-wte", "rms_norm"][..]] {
        let mut args = vec!["--results", csv.to_str().unwrap()];
        args.extend_from_slice(extra);
        rows.push(fixture_stack(&lab, &["a", "b"], &args));
    }
    // A row with a warning (commas inside a field) still reads back.
    let (data, a) = (val(), model_path("a"));
    let mut args = vec![
        "--models",
        &a,
        other.to_str().unwrap(),
        "--data",
        &data,
        "--results",
        csv.to_str().unwrap(),
    ];
    args.extend_from_slice(&DATA_ARGS);
    rows.push(stack_json(&lab, &args));
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let header = csv_split(lines[0]);
    for col in [
        "val_loss_stack",
        "val_losses",
        "mean_val_loss",
        "delta_vs_best",
        "use_first_layer",
        "use_last_layer",
        "norm_wte",
        "norm_lm_head",
        "norm_inter_model",
        "unique_model",
        "block_list",
        "models",
        "sha256",
        "tokens",
        "seq_len",
        "warnings",
        "seconds",
    ] {
        assert!(
            header.iter().any(|h| h == col),
            "no column {col}: {header:?}"
        );
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (line, v) in lines[1..].iter().zip(&rows) {
        let f = csv_split(line);
        assert_eq!(f.len(), header.len(), "{line}");
        let got: f64 = f[col("val_loss_stack")].parse().unwrap();
        assert_eq!(got, v["val_loss_stack"].as_f64().unwrap());
        assert_eq!(f[col("block_list")], v["block_list"].as_str().unwrap());
        assert_eq!(f[col("norm_wte")], v["norm_wte"].as_str().unwrap());
        assert_eq!(f[col("use_last_layer")], v["use_last_layer"].to_string());
        let losses: Vec<f64> = f[col("val_losses")]
            .split(';')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(losses.len(), 2);
    }
    assert!(csv_split(lines[3])[col("warnings")].contains("do not share the same W"));
    // A file with other columns is not mixed into.
    let foreign = lab.write("foreign.csv", "a,b\n1,2\n");
    let (a, b, data) = (model_path("a"), model_path("b"), val());
    let mut args = vec!["--models", &a, &b];
    args.extend_from_slice(&["--data", &data, "--results", foreign.to_str().unwrap()]);
    fails_with(&lab, &args, "its header has other columns");
}

fn train(lab: &Lab, config: &str, name: &str) -> PathBuf {
    let cfg = lab.write(&format!("{name}.toml"), config);
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        name,
        "--device",
        "cpu",
    ]);
    lab.checkpoints().join(name)
}

#[test]
fn trained_models_stack_in_one_pass_that_agrees_with_eval() {
    let lab = Lab::new();
    let m1 = train(&lab, &micro_config(5, ""), "m1");
    let m2 = train(
        &lab,
        &micro_config(5, "").replace("seed = 0", "seed = 1\nfrom_model = \"m1\""),
        "m2",
    );
    // Default data: the first model's (the embedded corpus), its val_tokens, its seq_len.
    let v = stack_json(&lab, &["--models", "m1", "m2"]);
    assert_eq!(v["tokens"], 2048);
    assert_eq!(v["seq_len"], 32);
    assert_eq!(v["block_list"], "m1:0..1 | m2:1..2");
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert_eq!(v["models"][0]["trained_norm_lm_head"], "rms_norm");
    for (i, run) in [&m1, &m2].iter().enumerate() {
        let out = lab.ok(&[
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ]);
        let e: Value = serde_json::from_str(out.trim()).unwrap();
        let (got, want) = (
            v["val_losses"][i].as_f64().unwrap(),
            e["val_loss"].as_f64().unwrap(),
        );
        assert!(
            rel(got, want) < 1e-9,
            "part {i}: one pass {got} vs eval {want}"
        );
    }
    // The text output: block list, the losses, mean, stack minus best, distinctness.
    let text = lab.ok(&[
        "stack",
        "--models",
        "m1",
        "m2",
        "--use-last-layer",
        "--device",
        "cpu",
    ]);
    for want in [
        "m1:0..2 | m2:1..2",
        "val_loss stack",
        "part 1 m1",
        "part 2 m2",
        "(cached)",
        "mean",
        "stack - best",
        "distinct        yes",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert!(!text.contains('{'), "no JSON without --json:\n{text}");
    // A boundary norm other than the trained one: named model, norm and both values.
    let out = lab.run(&[
        "stack",
        "--models",
        "m1",
        "m2",
        "--norm-lm-head",
        "layer_norm",
        "--json",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for label in ["m1 (`m1/step_000005`)", "m2 (`m2/step_000005`)"] {
        let w = format!("warning: {label} was trained with norm_lm_head = rms_norm, but the stack uses norm_lm_head = layer_norm");
        assert!(err.contains(&w), "{err}");
    }
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2, "{v}");
    // Saved, then evaluated by eval with its defaults: the same loss as the stack's.
    let saved = lab.path("stack-m1-m2");
    let v = stack_json(
        &lab,
        &[
            "--models",
            "m1",
            "m2",
            "--use-first-layer",
            "--save",
            saved.to_str().unwrap(),
        ],
    );
    let out = lab.ok(&[
        "eval",
        "--checkpoint",
        saved.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    let e: Value = serde_json::from_str(out.trim()).unwrap();
    let (got, want) = (
        e["val_loss"].as_f64().unwrap(),
        v["val_loss_stack"].as_f64().unwrap(),
    );
    assert!(rel(got, want) < 1e-9, "eval {got} vs stack {want}");
    assert_eq!(e["tokens"], 2048);
    // A training run starts from it (init_from) with every block as the stack had it.
    let run = train(
        &lab,
        &micro_config(1, "").replace(
            "seed = 0",
            &format!("seed = 2\ninit_from = \"{}\"", saved.display()),
        ),
        "from-stack",
    );
    let meta: toml::Table = std::fs::read_to_string(run.join("step_000001/meta.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(meta["model"]["n_layer"].as_integer(), Some(3));
    assert_eq!(meta["blocks"][2]["attn_scale"].as_float(), Some(0.5));
    // Trained on, its blocks still say where they came from.
    let trained: Vec<&str> = meta["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["source"].as_str().unwrap_or(""))
        .collect();
    let saved_meta: toml::Table = std::fs::read_to_string(saved.join("meta.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let stacked: Vec<&str> = saved_meta["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["source"].as_str().unwrap())
        .collect();
    assert_eq!(trained, stacked);
    assert!(stacked.iter().all(|s| s.contains(':')), "{stacked:?}");
    // Its step-0 validation, on the same tokens, is the stack's loss.
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["step"], 0);
    let v0 = first["val_loss"].as_f64().unwrap();
    assert!(rel(v0, want) < 1e-5, "step-0 loss {v0} vs stack {want}");
}

#[test]
fn stacks_finishing_together_write_one_header_and_every_row() {
    let lab = Lab::new();
    let csv = lab.path("new/stacks.csv");
    let (a, b, data) = (model_path("a"), model_path("b"), val());
    let children: Vec<std::process::Child> = (0..6)
        .map(|i| {
            let mut args = vec!["stack", "--models", &a, &b, "--data", &data];
            args.extend_from_slice(&DATA_ARGS);
            if i % 2 == 1 {
                args.push("--use-last-layer");
            }
            args.extend_from_slice(&["--results", csv.to_str().unwrap(), "--device", "cpu"]);
            lab.cmd(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    let header = lines[0];
    assert!(header.starts_with("created_at,val_loss_stack,"), "{header}");
    for l in &lines[1..] {
        assert_ne!(*l, header);
        assert_eq!(csv_split(l).len(), csv_split(header).len(), "{l}");
    }
}
