//! `inspect --scan`: every cut `A[0, i) + B[j, L)` of two models. A model scanned against
//! itself is seamless on its diagonal `i = j` (the cut is the model), which is the best cell;
//! a cell's loss is the loss `stack` gives the same ranges.

mod common;

use common::fixtures;
use stacklab::config::NormKind;
use stacklab::data::ShardLoader;
use stacklab::inspect::{inspect_with_scan, InspectInput, InspectOptions, PartInput};
use stacklab::model::weights::{load_seed_file, SeedOptions};
use stacklab::model::{Compute, Gpt};
use stacklab::stack::{assemble, BlockRange, PartView, StackNorms};
use tch::Device;

fn fixture_model(name: &str) -> Gpt {
    stacklab::device::init();
    load_seed_file(
        &fixtures().join(format!("stack_model_{name}.safetensors")),
        &SeedOptions {
            n_head: Some(1),
            seq_len: Some(48),
            ..Default::default()
        },
        Device::Cpu,
    )
    .unwrap()
}

fn view<'a>(label: &'a str, m: &'a Gpt, s: i64, e: i64) -> PartView<'a> {
    PartView {
        label,
        name: label,
        model: m,
        range: BlockRange::new(s, e),
        trained_norms: None,
    }
}

fn loaders() -> (ShardLoader, ShardLoader) {
    let glob = |f: &str| fixtures().join(f).display().to_string();
    (
        ShardLoader::from_glob(&glob("reference_val.bin"), 2, 48).unwrap(),
        ShardLoader::from_glob(&glob("reference_train_*.bin"), 2, 48).unwrap(),
    )
}

fn options() -> InspectOptions {
    InspectOptions {
        tokens: 192,
        batch: 2,
        stitch_steps: 0,
        stitch_lr: 1e-3,
        hist_bins: 16,
        device: Device::Cpu,
    }
}

/// The probe loss of an assembled stack on the probe's tokens (the first 192 val tokens).
fn stack_loss(parts: &[PartView], norms: &StackNorms) -> f64 {
    let s = assemble(parts, norms, 48);
    let mut l = ShardLoader::from_glob(
        &fixtures().join("reference_val.bin").display().to_string(),
        4,
        48,
    )
    .unwrap();
    let (x, y) = l.next_batch().unwrap().tensors(Device::Cpu);
    tch::no_grad(|| s.model.loss(&x, &y, Compute::Fp32).double_value(&[]))
}

#[test]
fn a_cell_is_the_stack_its_ranges_build_with_a_boundary_norm_between_two_models() {
    // A: 2 blocks, B: 4 blocks, an rms_norm at the seam.
    let (a, b) = (fixture_model("a"), fixture_model("c"));
    let norms = StackNorms {
        norm_inter_model: NormKind::RmsNorm,
        ..StackNorms::default()
    };
    let stack = assemble(&[view("m1", &a, 0, 1), view("m2", &b, 1, 4)], &norms, 48);
    let part = |label: &str, m: &Gpt, s: i64, e: i64| PartInput {
        label: label.into(),
        path: label.into(),
        model: m.shallow_clone(),
        start: s,
        end: e,
    };
    let input = InspectInput {
        stack: stack.model,
        parts: vec![part("m1", &a, 0, 1), part("m2", &b, 1, 4)],
        norm_inter_model: NormKind::RmsNorm,
    };
    let (mut val, mut train) = loaders();
    let r = inspect_with_scan(
        &input,
        &mut val,
        &mut train,
        &options(),
        &mut stacklab::progress::Silent,
    )
    .unwrap();
    let s = r.scan.as_ref().expect("a scan");
    assert_eq!((s.lower_blocks, s.upper_blocks), (2, 4));
    // Exit i = 1..=2 down, entry j = 0..4 across, row-major.
    let cuts: Vec<(usize, usize)> = s.cells.iter().map(|c| (c.exit, c.entry)).collect();
    let want: Vec<(usize, usize)> = (1..=2).flat_map(|i| (0..4).map(move |j| (i, j))).collect();
    assert_eq!(cuts, want);
    assert_eq!(s.default_cut, Some([1, 1]));
    assert_eq!((s.n_tokens, s.fit_tokens), (188, 188));
    // The default cut is the inspected stack itself.
    let cell = |i: usize, j: usize| {
        s.cells
            .iter()
            .find(|c| (c.exit, c.entry) == (i, j))
            .unwrap()
    };
    assert!(
        (cell(1, 1).loss - r.val_loss_stack).abs() < 1e-5,
        "{:?} vs {}",
        cell(1, 1),
        r.val_loss_stack
    );
    // Every cell's loss is what the stack path gives `--ranges 0:i,j:4` on the same tokens.
    for c in &s.cells {
        let want = stack_loss(
            &[
                view("m1", &a, 0, c.exit as i64),
                view("m2", &b, c.entry as i64, 4),
            ],
            &norms,
        );
        assert!((c.loss - want).abs() < 1e-5, "{c:?} vs stack {want}");
        assert!(c.loss_stitched.is_finite());
        // Two unrelated models: nothing is seamless.
        assert!((c.cka_debiased - 1.0).abs() > 1e-3, "{c:?}");
        assert!(
            c.angular_distance > 1e-3 && c.angular_distance < 1.0,
            "{c:?}"
        );
        assert!((c.angular_distance - c.cos.acos() / std::f64::consts::PI).abs() < 0.2);
    }
    // The best cells are the lowest, with the ranges (and flags, where they exist) that build them.
    let min = s.cells.iter().map(|c| c.loss).fold(f64::INFINITY, f64::min);
    assert_eq!(s.best.loss, min);
    assert_eq!(
        s.best.ranges,
        format!("0:{},{}:4", s.best.exit, s.best.entry)
    );
    let min = s
        .cells
        .iter()
        .map(|c| c.loss_stitched)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(s.best_stitched.loss, min);

    // A scan of three parts is refused before any token is read.
    let three = InspectInput {
        stack: assemble(
            &[
                view("m1", &a, 0, 1),
                view("m2", &b, 1, 4),
                view("m1", &a, 0, 2),
            ],
            &norms,
            48,
        )
        .model,
        parts: vec![
            part("m1", &a, 0, 1),
            part("m2", &b, 1, 4),
            part("m1", &a, 0, 2),
        ],
        norm_inter_model: NormKind::RmsNorm,
    };
    let e = inspect_with_scan(
        &three,
        &mut val,
        &mut train,
        &options(),
        &mut stacklab::progress::Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--scan compares two models") && e.contains("got 3"),
        "{e}"
    );
}

fn num(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

#[test]
fn a_model_scanned_against_itself_is_seamless_and_best_on_its_diagonal() {
    let lab = common::Lab::new();
    let cfg = common::micro_config(150, "").replace("n_layer = 2", "n_layer = 4");
    let p = lab.write("m1.toml", &cfg);
    let p = p.to_str().unwrap();
    lab.ok(&["train", "--config", p, "--name", "m1", "--device", "cpu"]);
    let m1 = lab.checkpoints().join("m1");
    let m1 = m1.to_str().unwrap();
    let plots = lab.path("figures");
    let common_args = ["--data", "embedded", "--tokens", "2048", "--device", "cpu"];
    let mut args = vec!["inspect", "--models", m1, m1, "--scan", "--json"];
    args.extend(["--plot", plots.to_str().unwrap()]);
    args.extend(common_args);
    let out = lab.ok(&args);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let own = num(&v["parts"][0], "val_loss");
    let scan = &v["scan"];
    let cells = scan["cells"].as_array().expect("scan.cells");
    assert_eq!(cells.len(), 16, "4 exits x 4 entries");
    let keys = [
        "exit",
        "entry",
        "rms_ratio",
        "cos",
        "cka_debiased",
        "angular_distance",
        "loss",
        "loss_stitched",
    ];
    for c in cells {
        for k in keys {
            assert!(c[k].is_number(), "cell lacks {k}: {c}");
        }
    }
    for k in ["best", "best_stitched"] {
        for f in ["exit", "entry", "loss", "ranges", "flags"] {
            assert!(scan[k].get(f).is_some(), "scan.{k} lacks {f}: {scan}");
        }
    }
    // The diagonal i = j (i = 1..3) is the model itself: seamless, and its loss.
    let mut off_diagonal = Vec::new();
    for c in cells {
        let (i, j) = (c["exit"].as_u64().unwrap(), c["entry"].as_u64().unwrap());
        assert!((1..=4).contains(&i) && j < 4, "{c}");
        if i == j {
            assert!((num(c, "rms_ratio") - 1.0).abs() < 1e-6, "{c}");
            assert!((num(c, "cka_debiased") - 1.0).abs() < 1e-6, "{c}");
            assert!((num(c, "cos") - 1.0).abs() < 1e-6, "{c}");
            assert!(num(c, "angular_distance") < 1e-6, "{c}");
            assert!((num(c, "loss") - own).abs() < 1e-4, "{c} vs {own}");
            assert!((num(c, "loss_stitched") - own).abs() < 1e-4, "{c} vs {own}");
        } else {
            off_diagonal.push(c);
        }
    }
    // ... and the best cell as is: skipping or repeating a block of a trained model costs.
    let b = &scan["best"];
    assert_eq!(b["exit"], b["entry"], "{b}");
    assert!((num(b, "loss") - own).abs() < 1e-4, "{b} vs {own}");
    let i = b["exit"].as_u64().unwrap();
    assert_eq!(b["ranges"], format!("0:{i},{i}:4"));
    assert!(b["flags"].is_null(), "no flag cut is a diagonal cell: {b}");
    for c in off_diagonal {
        assert!(num(c, "loss") > own + 1e-4, "{c} vs {own}");
    }
    // A map fitted on train tokens may let a repeated block help, so the stitched best need
    // not be diagonal; it is the lowest stitched cell, and the diagonal's is the model's.
    let low = cells
        .iter()
        .map(|c| num(c, "loss_stitched"))
        .fold(f64::INFINITY, f64::min);
    assert_eq!(num(&scan["best_stitched"], "loss"), low);
    assert!(low < own + 1e-4);
    assert_eq!(scan["default_cut"], serde_json::json!([3, 1]));
    // The default cut is the inspected stack (m1:0..3 | m1:1..4).
    let at = |i: u64, j: u64| {
        cells
            .iter()
            .find(|c| c["exit"] == i && c["entry"] == j)
            .unwrap()
    };
    assert!((num(at(3, 1), "loss") - num(&v, "val_loss_stack")).abs() < 1e-5);
    // A cell's loss is what `stack --ranges 0:i,j:L` reports on the same tokens.
    let mut args = vec!["stack", "--models", m1, m1, "--ranges", "0:2,3:4", "--json"];
    args.extend(common_args);
    let st = lab.ok(&args);
    let st: serde_json::Value = serde_json::from_str(st.lines().last().unwrap()).unwrap();
    let want = num(&st, "val_loss_stack");
    assert!(
        (num(at(2, 3), "loss") - want).abs() < 1e-5,
        "{} vs stack {want}",
        at(2, 3)
    );
    // The heat maps: one SVG with the best cell and the seed's default cut marked.
    let figures: Vec<&str> = v["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let svg = figures.iter().find(|f| f.ends_with("scan.svg")).unwrap();
    let text = std::fs::read_to_string(svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for t in [
        "loss (as is)",
        "loss (least-squares stitch)",
        "debiased CKA",
    ] {
        assert!(texts.contains(&t), "{t:?} not in {texts:?}");
    }
    assert_eq!(
        texts.iter().filter(|t| **t == "seed's default cut").count(),
        6
    );
    let best = format!("best: exit {i}, entry {i}", i = scan["best"]["exit"]);
    assert!(
        texts.iter().any(|t| *t == best),
        "{best:?} not in {texts:?}"
    );

    // The text report prints the tables and both best cells with what builds them.
    let mut args = vec!["inspect", "--models", m1, m1, "--scan"];
    args.extend(common_args);
    let out = lab.ok(&args);
    assert!(out.contains("loss (least-squares stitch)"), "{out}");
    assert!(out.contains("best stitched"), "{out}");
    assert!(out.contains(&format!(
        "--ranges {}",
        scan["best"]["ranges"].as_str().unwrap()
    )));
    // A scan of three models is refused by name.
    let e = lab.fails(&[
        "inspect", "--models", m1, m1, m1, "--scan", "--device", "cpu",
    ]);
    assert!(e.contains("--scan compares two models"), "{e}");
}
