//! Numbers that must never be silently wrong: a cached loss is served only for the model
//! that computed it (weights *and* block layout), the tokens scored never depend on
//! `--batch`, and a stitch is never fitted (or chosen) on the probe it is scored on.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, Lab};
use serde_json::Value;
use stacklab::data::shard;
use stacklab::model::weights::{load_seed_file, SeedOptions};
use stacklab::model::Compute;
use tch::{Device, Tensor};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Token ids below `vocab` from a fixed linear congruential sequence.
fn tokens(n: usize, vocab: u16, seed: u64) -> Vec<u16> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) % vocab as u64) as u16
        })
        .collect()
}

/// Val shards `v_000000.bin`, ... of the given lengths in `dir`; returns their glob and
/// their tokens.
fn val_shards(dir: &Path, lens: &[usize], vocab: u16) -> (String, Vec<Vec<u16>>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut all = Vec::new();
    for (i, &n) in lens.iter().enumerate() {
        let t = tokens(n, vocab, 17 + i as u64);
        shard::write(&dir.join(format!("v_{i:06}.bin")), &t).unwrap();
        all.push(t);
    }
    (dir.join("v_*.bin").display().to_string(), all)
}

/// Runs `stacklab ARGS --json --device cpu` with the loss cache in `data_dir`; the last
/// stdout line as JSON.
fn json_in(lab: &Lab, data_dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--json", "--device", "cpu"]);
    let out = lab
        .cmd(&all)
        .env("STACKLAB_DATA_DIR", data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stacklab {all:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::no_panic(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn losses(v: &Value) -> Vec<f64> {
    v["val_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cached(v: &Value) -> Vec<bool> {
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cached"].as_bool().unwrap())
        .collect()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn saved_stacks_that_differ_only_in_their_boundary_norm_are_two_models_and_never_fit_on_the_probe()
{
    let lab = Lab::new();
    common::train_pair(&lab);
    let cache = lab.path("cache-data");
    let (g, _) = val_shards(&lab.path("val"), &[700, 500], 4096);
    let (m1, m2) = (
        lab.checkpoints().join("m1").display().to_string(),
        lab.checkpoints().join("m2").display().to_string(),
    );
    let data = [
        "--data",
        &g,
        "--tokens",
        "1024",
        "--seq-len",
        "32",
        "--batch",
        "4",
    ];
    let stack = |models: &[&str], extra: &[&str]| -> Value {
        let mut a = vec!["stack", "--models"];
        a.extend_from_slice(models);
        a.extend_from_slice(&data);
        a.extend_from_slice(extra);
        json_in(&lab, &cache, &a)
    };
    let (s_none, s_rms) = (lab.path("S_none"), lab.path("S_rms"));
    let saved_none = stack(&[&m1, &m2], &["--save", s_none.to_str().unwrap()]);
    let saved_rms = stack(
        &[&m1, &m2],
        &[
            "--norm-inter-model",
            "rms_norm",
            "--save",
            s_rms.to_str().unwrap(),
        ],
    );
    let (own_none, own_rms) = (
        f(&saved_none, "val_loss_stack"),
        f(&saved_rms, "val_loss_stack"),
    );
    assert!((own_none - own_rms).abs() > 1e-4, "{own_none} vs {own_rms}");
    // The case that fooled the cache: the same weights, another boundary norm.
    assert_eq!(
        std::fs::read(s_none.join("model.safetensors")).unwrap(),
        std::fs::read(s_rms.join("model.safetensors")).unwrap()
    );
    let (s_none, s_rms) = (s_none.display().to_string(), s_rms.display().to_string());
    let first = stack(&[&s_none, &m1], &[]);
    assert!(rel(losses(&first)[0], own_none) < 1e-6, "{first}");
    let second = stack(&[&s_rms, &m1], &[]);
    assert_eq!(cached(&second), [false, true], "{second}");
    assert!(rel(losses(&second)[0], own_rms) < 1e-6, "{second}");
    let fresh = stack(&[&s_rms, &m1], &["--no-cache"]);
    assert_eq!(fresh["val_losses"], second["val_losses"]);
    assert_eq!(fresh["val_loss_stack"], second["val_loss_stack"]);
    // eval computes the saved stack's own loss another way.
    let e = json_in(
        &lab,
        &cache,
        &[
            "eval",
            "--checkpoint",
            &s_rms,
            "--data",
            &g,
            "--tokens",
            "1024",
            "--batch",
            "4",
        ],
    );
    assert!(rel(f(&e, "val_loss"), own_rms) < 1e-6, "{e}");
    // Stacked on each other they are two models: S_none[0,1) + S_rms[1,2) keeps S_rms's
    // boundary norm on its block 1, so the stack is S_rms itself.
    let both = stack(&[&s_none, &s_rms], &[]);
    assert_eq!(both["unique_model"], true, "{both}");
    let labels: Vec<&str> = both["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["m1", "m2"]);
    assert_ne!(both["models"][0]["model_id"], both["models"][1]["model_id"]);
    assert_eq!(both["models"][0]["sha256"], both["models"][1]["sha256"]);
    assert!(rel(f(&both, "val_loss_stack"), own_rms) < 1e-6, "{both}");
    assert!(rel(losses(&both)[0], own_none) < 1e-6 && rel(losses(&both)[1], own_rms) < 1e-6);

    // A saved stack records its models' training data and the val data it was scored on.
    let cfg: toml::Table = std::fs::read_to_string(Path::new(&s_rms).join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cfg["data"]["val"].as_str(), Some(g.as_str()));
    let train = cfg["data"]["train"].as_str().unwrap();
    assert!(train.contains("train"), "{train}");
    // So inspect fits its stitch on train tokens by default, chosen on held-out train
    // tokens: the penalty's map is the one lower there, scored on the probe.
    let v = json_in(
        &lab,
        &cache,
        &[
            "inspect",
            "--models",
            &s_rms,
            &m1,
            "--tokens",
            "512",
            "--batch",
            "4",
            "--stitch",
            "30",
            "--stitch-lr",
            "0.01",
        ],
    );
    let st = &v["seams"][0]["stitch"];
    assert_eq!(st["fit_tokens"], 512);
    assert_eq!(st["heldout_tokens"], 128);
    let (h_ls, h_tr) = (f(&st["heldout"], "lstsq"), f(&st["heldout"], "trained"));
    let chosen = if h_tr < h_ls { "trained" } else { "lstsq" };
    assert_eq!(st["chosen"], chosen, "{st}");
    assert!((f(st, "penalty") - (f(st, chosen) - f(st, "upper_model"))).abs() < 1e-12);
    // Training the map lowers the loss on the tokens it was trained on below the identity's.
    assert!(f(&st["fit"], "trained") < f(&st["fit"], "identity"), "{st}");

    // A seed-format file's own loss uses the norms it was trained with, which `export`
    // records in its metadata, not the stack's (here norm_lm_head = layer_norm).
    let (f1, f2) = (lab.path("m1.safetensors"), lab.path("m2.safetensors"));
    for (ck, file) in [(&m1, &f1), (&m2, &f2)] {
        lab.ok(&[
            "export",
            "--checkpoint",
            ck,
            "--out",
            file.to_str().unwrap(),
        ]);
    }
    let (f1, f2) = (f1.display().to_string(), f2.display().to_string());
    let native = stack(&[&m1, &m2], &["--norm-lm-head", "layer_norm"]);
    let files = stack(&[&f1, &f2], &["--norm-lm-head", "layer_norm"]);
    assert_eq!(files["models"][0]["trained_norms_from"], "file metadata");
    assert_eq!(files["models"][0]["trained_norm_lm_head"], "rms_norm");
    for (a, b) in losses(&files).iter().zip(losses(&native)) {
        assert!(rel(*a, b) < 1e-6, "{files}\n{native}");
    }
    assert!(rel(f(&files, "val_loss_stack"), f(&native, "val_loss_stack")) < 1e-6);
    let warned = |v: &Value, text: &str| {
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains(text))
    };
    assert!(
        warned(&files, "was trained with norm_lm_head = rms_norm, but the stack uses norm_lm_head = layer_norm"),
        "{files}"
    );
    // A file without that metadata (heads given, as it does not say them either):
    // --part-norms says, else the output says they are unknown.
    let bare = lab.path("bare.safetensors");
    let weights = Tensor::read_safetensors(&f1).unwrap();
    Tensor::write_safetensors(&weights, &bare).unwrap();
    let bare = bare.display().to_string();
    let told = stack(
        &[&bare, &f2],
        &[
            "--norm-lm-head",
            "layer_norm",
            "--n-head",
            "2",
            "--part-norms",
            "none/rms_norm",
        ],
    );
    assert_eq!(told["models"][0]["trained_norms_from"], "--part-norms");
    assert!(rel(losses(&told)[0], losses(&native)[0]) < 1e-6, "{told}");
    let unknown = stack(
        &[&bare, &f2],
        &["--norm-lm-head", "layer_norm", "--n-head", "2"],
    );
    assert_eq!(unknown["models"][0]["trained_norm_lm_head"], Value::Null);
    assert!(warned(&unknown, "the training norms of m1 (`"), "{unknown}");
    assert!(
        (losses(&unknown)[0] - losses(&native)[0]).abs() > 1e-4,
        "{unknown}"
    );

    // Fitting on the probe itself is refused, by name, and so is fitting on a copy of it.
    let e = lab.fails(&[
        "inspect",
        "--models",
        &m1,
        &m2,
        "--data",
        &g,
        "--train-data",
        &g,
        "--tokens",
        "512",
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("the stitch's train tokens overlap the val probe") && e.contains("v_000000.bin"),
        "{e}"
    );
    let copy = lab.path("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(lab.path("val/v_000000.bin"), copy.join("t_000000.bin")).unwrap();
    let e = lab.fails(&[
        "inspect",
        "--models",
        &m1,
        &m2,
        "--data",
        &g,
        "--train-data",
        copy.join("t_*.bin").to_str().unwrap(),
        "--tokens",
        "512",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("files with the same content"), "{e}");
}

/// The mean loss of `model` over the first `n` sequences of 32 tokens of `shards`, read
/// sequence after sequence (a sequence that does not fit a shard's rest starts the next).
fn loss_by_hand(model: &stacklab::model::Gpt, shards: &[Vec<u16>], n: usize) -> f64 {
    let t = 32;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    'outer: for s in shards {
        let mut pos = 0;
        while pos + t < s.len() {
            xs.extend(s[pos..pos + t].iter().map(|&v| v as i64));
            ys.extend(s[pos + 1..pos + t + 1].iter().map(|&v| v as i64));
            pos += t;
            if xs.len() == n * t {
                break 'outer;
            }
        }
    }
    assert_eq!(xs.len(), n * t);
    let x = Tensor::from_slice(&xs).view([n as i64, t as i64]);
    let y = Tensor::from_slice(&ys).view([n as i64, t as i64]);
    tch::no_grad(|| model.loss(&x, &y, Compute::Fp32).double_value(&[]))
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(format!("stack_model_{name}.safetensors"))
}

#[test]
fn the_tokens_scored_never_depend_on_the_batch_size_and_the_cache_knows_the_batch() {
    stacklab::device::init();
    let lab = Lab::new();
    let cache = lab.path("cache-data");
    let opts = SeedOptions {
        seq_len: Some(32),
        ..Default::default()
    };
    let a = load_seed_file(&fixture("a"), &opts, Device::Cpu).unwrap();
    let b = load_seed_file(&fixture("b"), &opts, Device::Cpu).unwrap();
    let vocab = a.cfg.vocab_size as u16;
    // 5 sequences of 32 in the first shard, 4 in the second: 8 sequences cross the boundary
    // where batches of 4 (and of 3) would have dropped the first shard's tail.
    let (g, shards) = val_shards(&lab.path("val"), &[161, 129], vocab);
    let (pa, pb) = (
        fixture("a").display().to_string(),
        fixture("b").display().to_string(),
    );
    let stack = |batch: &str, extra: &[&str]| -> Value {
        let mut args = vec![
            "stack",
            "--models",
            &pa,
            &pb,
            "--data",
            &g,
            "--tokens",
            "256",
            "--seq-len",
            "32",
            "--batch",
            batch,
        ];
        args.extend_from_slice(extra);
        json_in(&lab, &cache, &args)
    };
    let b4 = stack("4", &[]);
    let b3 = stack("3", &[]);
    let b3_fresh = stack("3", &["--no-cache"]);
    assert_eq!(b4["tokens"], 256);
    // Batch 3 after batch 4: not batch 4's parts, exactly what --no-cache gives.
    assert_eq!(cached(&b3), [false, false], "{b3}");
    assert_eq!(b3["val_losses"], b3_fresh["val_losses"]);
    assert_eq!(b3["val_loss_stack"], b3_fresh["val_loss_stack"]);
    assert_eq!(cached(&stack("3", &[])), [true, true]);
    // The same tokens whatever the batch: the parts equal a computation by hand, and the
    // stack agrees across batch sizes to float rounding.
    let want = [loss_by_hand(&a, &shards, 8), loss_by_hand(&b, &shards, 8)];
    for v in [&b4, &b3] {
        for (got, want) in losses(v).iter().zip(want) {
            assert!(rel(*got, want) < 1e-6, "{got} vs {want} in {v}");
        }
    }
    assert!(rel(f(&b4, "val_loss_stack"), f(&b3, "val_loss_stack")) < 1e-6);
    // eval reads the same way.
    for batch in ["4", "3", "1"] {
        let e = json_in(
            &lab,
            &cache,
            &[
                "eval",
                "--checkpoint",
                &pa,
                "--data",
                &g,
                "--tokens",
                "256",
                "--seq-len",
                "32",
                "--batch",
                batch,
            ],
        );
        assert!(rel(f(&e, "val_loss"), want[0]) < 1e-6, "batch {batch}: {e}");
    }
}
