//! The binary's command line: doctor, config errors as a user sees them, the lab without a
//! terminal.

mod common;

use common::Lab;

#[test]
fn doctor_reports_libtorch_devices_and_folders() {
    let lab = Lab::new();
    let out = lab.ok(&["doctor"]);
    for key in [
        "stacklab",
        "libtorch",
        "torch lib dir",
        "CUDA",
        "cuDNN",
        "device in use",
        "CPU threads",
        "data dir",
        "config dir",
        "checkpoint dir",
    ] {
        assert!(out.contains(key), "doctor lacks {key}:\n{out}");
    }
    assert!(out.contains("2.11.0"), "libtorch 2.11.0:\n{out}");
    let json: serde_json::Value = serde_json::from_str(&lab.ok(&["doctor", "--json"])).unwrap();
    assert_eq!(
        json["libtorch_version"].as_str().unwrap().split('+').next(),
        Some("2.11.0")
    );
    assert_eq!(
        json["checkpoint_dir"],
        lab.checkpoints().display().to_string()
    );
    if !json["cuda_available"].as_bool().unwrap() {
        assert!(
            json["default_device"].as_str().unwrap().starts_with("cpu"),
            "{json}"
        );
        assert!(out.contains("device in use    cpu"), "{out}");
        let e = lab.fails(&["eval", "--checkpoint", "x", "--device", "cuda"]);
        assert!(e.contains("CUDA is not available here"), "{e}");
    }
}

#[test]
fn a_missing_device_is_refused() {
    let lab = Lab::new();
    let e = lab.fails(&["bench", "--device", "cuda:7", "--steps", "1"]);
    assert!(e.contains("device `cuda:7`"), "{e}");
    let e = lab.fails(&["bench", "--device", "tpu", "--steps", "1"]);
    assert!(e.contains("unknown device `tpu`"), "{e}");
}

#[test]
fn config_errors_name_the_file_the_key_and_what_is_allowed() {
    let lab = Lab::new();
    let cases = [
        ("[model]\nn_layers = 4\n", "`model.n_layers`: unknown key; did you mean `model.n_layer`?"),
        ("[model]\nn_layer = \"4\"\n", "`model.n_layer`: expected an integer, found a string \"4\""),
        ("[model]\nnorm_lm_head = \"rmsnorm\"\n", "`model.norm_lm_head`: `rmsnorm` is not allowed; expected one of: none, rms_norm, layer_norm"),
        ("[model]\nn_embd = 96\nn_head = 5\n", "`model.n_embd`: width 96 is not divisible by model.n_head = 5"),
        ("[batch]\nglobal_batch = 10\nmicro_batch = 4\n", "`batch.global_batch`: 10 sequences is not divisible by batch.micro_batch x batch.devices = 4 x 1 = 4"),
        ("[model]\nvocab_size = 100000\n", "`model.vocab_size`: 100000 does not fit the uint16 tokens of the shard format"),
        ("[schedule]\nsteps = 10\nwarmdown = 20\n", "`schedule.warmdown`: 20 is more than schedule.steps = 10"),
    ];
    for (body, want) in cases {
        let p = lab.write("bad.toml", &format!("{body}\n"));
        let e = lab.fails(&["train", "--config", p.to_str().unwrap()]);
        assert!(
            e.contains(&format!("{}: {want}", p.display())),
            "want {want:?}, got:\n{e}"
        );
    }
    let e = lab.fails(&[
        "train",
        "--config",
        "tiny",
        "--set",
        "optimizer.muon.lrr=0.1",
    ]);
    assert!(e.contains("--set optimizer.muon.lrr=0.1: `optimizer.muon.lrr`: unknown key; did you mean `optimizer.muon.lr`?"), "{e}");
    let e = lab.fails(&["train", "--config", "no-such-config"]);
    assert!(e.contains("config `no-such-config` not found"), "{e}");
    // Nothing was created for refused configs.
    assert!(
        !lab.checkpoints().exists()
            || std::fs::read_dir(lab.checkpoints())
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn the_lab_needs_a_terminal() {
    let lab = Lab::new();
    let e = lab.fails(&[]);
    assert!(e.contains("terminal"), "{e}");
}

#[test]
fn bench_reports_throughput_on_the_cpu() {
    let lab = Lab::new();
    let out = lab.ok(&[
        "bench",
        "--config",
        "tiny",
        "--set",
        "model.n_layer=2",
        "--batch",
        "2",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--json",
        "--device",
        "cpu",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["step_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["batch"], 2);
    assert_eq!(v["seq_len"], 128);
    // 6·N + 12·L·C·T with N the parameter count.
    let n = v["parameters"].as_f64().unwrap();
    assert_eq!(
        v["flops_per_token"].as_f64().unwrap(),
        6.0 * n + 12.0 * 2.0 * 128.0 * 128.0
    );
    assert!(v["mfu"].is_null(), "no bf16 peak is claimed for a CPU");
    assert!(v["final_loss"].as_f64().unwrap().is_finite());
}
