//! The forward pass against a PyTorch implementation of the seed's model, on the same
//! weights and tokens, for every norm setting (fixtures made by tests/fixtures/make_reference.py).

mod common;

use stacklab::config::NormKind;
use stacklab::model::weights::{load_seed_file, SeedOptions};
use stacklab::model::Compute;
use tch::{Device, Tensor};

fn reference() -> serde_json::Value {
    common::read_json(&common::fixtures().join("reference_losses.json"))
}

#[test]
fn forward_loss_matches_pytorch_for_every_norm_setting() {
    stacklab::device::init();
    let r = reference();
    let (b, t) = (r["batch"].as_i64().unwrap(), r["seq_len"].as_i64().unwrap());
    let tokens: Vec<i64> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let all = Tensor::from_slice(&tokens);
    let x = all.narrow(0, 0, b * t).view([b, t]);
    let y = all.narrow(0, 1, b * t).view([b, t]);
    let rows = r["losses"].as_array().unwrap();
    assert_eq!(rows.len(), 18);
    for row in rows {
        let opts = SeedOptions {
            n_head: Some(row["n_head"].as_i64().unwrap()),
            norm_wte: Some(
                row["norm_wte"]
                    .as_str()
                    .unwrap()
                    .parse::<NormKind>()
                    .unwrap(),
            ),
            norm_lm_head: Some(
                row["norm_lm_head"]
                    .as_str()
                    .unwrap()
                    .parse::<NormKind>()
                    .unwrap(),
            ),
            seq_len: Some(t),
        };
        let model = load_seed_file(
            &common::fixtures().join("reference_model.safetensors"),
            &opts,
            Device::Cpu,
        )
        .unwrap();
        let got = tch::no_grad(|| model.loss(&x, &y, Compute::Fp32).double_value(&[]));
        let want = row["loss"].as_f64().unwrap();
        let rel = (got - want).abs() / want.abs();
        assert!(
            rel < 1e-6,
            "{row}: stacklab {got} vs PyTorch {want} (relative {rel:e})"
        );
    }
}

#[test]
fn eval_command_on_the_seed_file_gives_the_reference_loss() {
    let lab = common::Lab::new();
    let r = reference();
    let want = r["losses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| {
            row["n_head"] == 1 && row["norm_wte"] == "none" && row["norm_lm_head"] == "rms_norm"
        })
        .unwrap()["loss"]
        .as_f64()
        .unwrap();
    let model = common::fixtures().join("reference_model.safetensors");
    let data = common::fixtures().join("reference_val.bin");
    // Batches of 2, of 3 and a smaller last one, and a whole batch of 4 score the same 192 tokens.
    for batch in ["2", "3", "4"] {
        let out = lab.ok(&[
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--tokens",
            "192",
            "--seq-len",
            "48",
            "--batch",
            batch,
            "--json",
            "--device",
            "cpu",
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let got = v["val_loss"].as_f64().unwrap();
        assert!(
            (got - want).abs() / want < 1e-6,
            "batch {batch}: {got} vs {want}"
        );
        assert_eq!(v["tokens"], 192);
        assert_eq!(v["seq_len"], 48);
        assert_eq!(v["checkpoint"], model.to_str().unwrap());
    }
    // Asking for more tokens than the shard holds is an error, not a wrap-around.
    let e = lab.fails(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--tokens",
        "240",
        "--seq-len",
        "48",
        "--batch",
        "2",
    ]);
    assert!(
        e.contains("--tokens 240: the val shards") && e.contains("hold at most 192 tokens"),
        "{e}"
    );
}

/// `eval --tokens 192` on the 193-token shard with the default batch (16 sequences, more
/// than the shard holds): the batch is clamped to what is needed and what fits.
#[test]
fn eval_clamps_the_default_batch_to_a_small_shard() {
    let lab = common::Lab::new();
    let want = reference()["losses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| {
            row["n_head"] == 1 && row["norm_wte"] == "none" && row["norm_lm_head"] == "rms_norm"
        })
        .unwrap()["loss"]
        .as_f64()
        .unwrap();
    let model = common::fixtures().join("reference_model.safetensors");
    let data = common::fixtures().join("reference_val.bin");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--tokens",
            "192",
            "--json",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(lab.ok(&args).trim()).unwrap();
        v
    };
    let v = eval(&["--seq-len", "48"]);
    assert_eq!(
        (v["batch"].as_i64(), v["tokens"].as_i64()),
        (Some(4), Some(192))
    );
    assert!(
        (v["val_loss"].as_f64().unwrap() - want).abs() / want < 1e-6,
        "{v}"
    );
    // 6 sequences of 32: a batch of 5 and a last one of 1.
    let v = eval(&["--seq-len", "32", "--batch", "5"]);
    assert_eq!(
        (v["batch"].as_i64(), v["tokens"].as_i64()),
        (Some(5), Some(192))
    );
    // A batch the shard cannot hold says which one works.
    let e = lab.fails(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--tokens",
        "1000",
        "--seq-len",
        "32",
        "--batch",
        "7",
    ]);
    assert!(
        e.contains("--batch 7: shard") && e.contains("--batch 6 or less fits"),
        "{e}"
    );
}

fn strict_load(
    file: &std::path::Path,
    shard: &std::path::Path,
    tokens: &str,
) -> std::process::Output {
    std::process::Command::new("python3")
        .arg(common::fixtures().join("strict_load.py"))
        .arg(file)
        .arg(shard)
        .arg(tokens)
        .output()
        .expect("python3 runs (./lab.sh puts the project's venv first on PATH)")
}

/// A checkpoint exported with `stacklab export` loads with `load_state_dict(strict=True)`
/// into the seed's GPT class (make_reference.py's), with and without torch.compile's
/// prefix, and PyTorch scores it as `stacklab eval` scores the checkpoint.
#[test]
fn an_exported_checkpoint_loads_strictly_into_the_seeds_gpt() {
    let lab = common::Lab::new();
    let cfg = lab.write(
        "export.toml",
        &common::micro_config(2, "").replace("norm_wte = \"none\"", "norm_wte = \"layer_norm\""),
    );
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "exp",
        "--device",
        "cpu",
    ]);
    let ckpt = lab.checkpoints().join("exp/step_000002");
    let shard = common::shared_data_dir().join("embedded/shakespeare-bpe4096-v1/val_000000.bin");
    let native: serde_json::Value = serde_json::from_str(
        lab.ok(&[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--tokens",
            "2048",
            "--json",
            "--device",
            "cpu",
        ])
        .trim(),
    )
    .unwrap();
    let native = native["val_loss"].as_f64().unwrap();
    // A checkpoint's own model.safetensors holds W once and no rotary buffers: not strict.
    let out = strict_load(&ckpt.join("model.safetensors"), &shard, "2048");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Missing key(s)") && err.contains("lm_head.weight"),
        "{err}"
    );
    for prefix in ["", "_orig_mod."] {
        let file = lab.path(&format!(
            "export{}.safetensors",
            prefix.trim_end_matches('.')
        ));
        lab.ok(&[
            "export",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
            "--prefix",
            prefix,
        ]);
        let out = strict_load(&file, &shard, "2048");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        assert_eq!(
            (v["prefix"].as_str(), v["n_head"].as_i64()),
            (Some(prefix), Some(2))
        );
        let py = v["loss"].as_f64().unwrap();
        assert!(
            (py - native).abs() / native < 1e-5,
            "PyTorch {py} vs stacklab eval {native} ({prefix:?})"
        );
        // stacklab reads the export back with the head count, norms and context it recorded.
        let again: serde_json::Value = serde_json::from_str(
            lab.ok(&[
                "eval",
                "--checkpoint",
                file.to_str().unwrap(),
                "--data",
                shard.to_str().unwrap(),
                "--tokens",
                "2048",
                "--json",
                "--device",
                "cpu",
            ])
            .trim(),
        )
        .unwrap();
        assert!(
            (again["val_loss"].as_f64().unwrap() - native).abs() < 1e-9,
            "{again}"
        );
        assert_eq!(again["norm_wte"], "layer_norm");
    }
    // An existing file is not replaced without --force, and no temporary file is left.
    let file = lab.path("export.safetensors");
    let before = std::fs::read(&file).unwrap();
    let e = lab.fails(&[
        "export",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(e.contains("the file exists; pass --force"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
    lab.ok(&[
        "export",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
        "--force",
    ]);
    assert!(!std::fs::read_dir(lab.dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn checkpoints_that_do_not_fit_are_refused_with_tensor_and_shapes() {
    let lab = common::Lab::new();
    let model = common::fixtures().join("reference_model.safetensors");
    let data = common::fixtures().join("reference_val.bin");
    // 3 heads do not divide width 64.
    let e = lab.fails(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--n-head",
        "3",
    ]);
    assert!(e.contains("width 64 is not divisible by 3 heads"), "{e}");
    // 64 heads divide width 64 but give head size 1, which rotary cannot split: refused
    // before the model is built (libtorch's `view` used to panic on it).
    let e = lab.fails(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--n-head",
        "64",
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("`model.n_head`: 64 heads on width 64 give head size 1, which must be even")
            && e.contains("--n-head"),
        "{e}"
    );

    // A file with a wrongly shaped block matrix.
    stacklab::device::init();
    let mut tensors = stacklab::model::weights::read_safetensors(&model).unwrap();
    tensors.insert(
        "_orig_mod.transformer.h.1.mlp.c_fc.weight".into(),
        Tensor::zeros([100, 64], (tch::Kind::Float, Device::Cpu)),
    );
    let bad = lab.path("bad.safetensors");
    let list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    Tensor::write_safetensors(&list, &bad).unwrap();
    let e = lab.fails(&[
        "eval",
        "--checkpoint",
        bad.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(
        e.contains(
            "tensor transformer.h.1.mlp.c_fc.weight has shape [100, 64], expected [256, 64]"
        ),
        "{e}"
    );

    // A file that is not a model at all.
    let junk = lab.write("junk.safetensors", "not a safetensors file");
    let e = lab.fails(&[
        "eval",
        "--checkpoint",
        junk.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(
        e.contains("junk.safetensors: not a readable safetensors file"),
        "{e}"
    );

    let e = lab.fails(&["eval", "--checkpoint", "no-such-checkpoint"]);
    assert!(
        e.contains("checkpoint `no-such-checkpoint` not found"),
        "{e}"
    );
}
