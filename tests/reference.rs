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
        e.contains("cannot score 240 tokens") && e.contains("fewer tokens than asked for"),
        "{e}"
    );
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
