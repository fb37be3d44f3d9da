//! The binary's command line: doctor, config errors as a user sees them, the lab without a
//! terminal.

mod common;

use common::Lab;

/// `doctor` gives every GPU's figures as the System pane labels them, and the host's; with
/// no GPU, one line says why.
#[test]
fn doctor_reports_gpu_and_host_figures() {
    let lab = Lab::new();
    let fake = |args: &[&str]| {
        let out = lab
            .cmd(args)
            .env("STACKLAB_FAKE_GPUS", "2")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&fake(&["doctor", "--json"])).unwrap();
    assert_eq!(json["gpu_source"], "fake: 2 GPUs (STACKLAB_FAKE_GPUS)");
    let gpus = json["gpu_figures"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0]["utilization_percent"], 37);
    assert_eq!(gpus[1]["memory_total_bytes"].as_u64(), Some(80 << 30));
    assert!(json["no_gpu_figures"].is_null());
    let host = &json["host"];
    assert!(host["memory_total_bytes"].as_u64().unwrap() > 0, "{host}");
    assert!(host["cpu_cores"].as_u64().unwrap() >= 1, "{host}");
    assert_eq!(host["disks"][0]["label"], "checkpoints");
    assert_eq!(
        host["disks"][0]["path"],
        lab.checkpoints().display().to_string()
    );
    assert!(
        host["disks"][1]["free_bytes"].as_u64().unwrap() > 0,
        "{host}"
    );
    let text = fake(&["doctor"]);
    for want in [
        "GPU figures      fake: 2 GPUs",
        "GPU              0 Fake GPU 80GB: util 37%, mem 12.1/80.0 GiB, temp 45°C, power 310/700 W, processes 0",
        "host             CPU busy ",
        "disk             checkpoints free ",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    let plain: serde_json::Value = serde_json::from_slice(
        &lab.cmd(&["doctor", "--json"])
            .env_remove("STACKLAB_FAKE_GPUS")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    match plain["no_gpu_figures"].as_str() {
        Some(why) => {
            assert!(!why.is_empty() && !why.contains('\n'), "{why}");
            assert_eq!(plain["gpu_figures"], serde_json::json!([]));
        }
        None => assert!(!plain["gpu_figures"].as_array().unwrap().is_empty()),
    }
}

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
        "fp32 on CUDA",
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
    // What validation's fp32 matmuls use on CUDA: TF32, set by main unless the environment says.
    assert!(
        json["cuda_fp32_matmul"]
            .as_str()
            .unwrap()
            .starts_with("TF32 (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1)"),
        "{json}"
    );
    let full: serde_json::Value = serde_json::from_slice(
        &lab.cmd(&["doctor", "--json"])
            .env("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "0")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        full["cuda_fp32_matmul"]
            .as_str()
            .unwrap()
            .starts_with("full fp32 (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=0)"),
        "{full}"
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
    // The default times one micro-batch and one optimizer step, and says so.
    assert_eq!(v["accum"], 1);
    assert!(
        v["timed"]
            .as_str()
            .unwrap()
            .starts_with("1 micro-batch of 2 x 128"),
        "{v}"
    );
    let share = v["optimizer_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{v}");
    let parts = v["micro_batches_ms"].as_f64().unwrap() + v["optimizer_ms"].as_f64().unwrap();
    assert!((parts - v["step_ms"].as_f64().unwrap()).abs() < 1e-6, "{v}");
}

#[test]
fn bench_accum_times_several_micro_batches_and_one_optimizer_step() {
    let lab = Lab::new();
    let args = |accum: &'static str| {
        [
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
            "--accum",
            accum,
            "--device",
            "cpu",
        ]
    };
    let v: serde_json::Value =
        serde_json::from_str(lab.ok(&[&args("3")[..], &["--json"]].concat()).trim()).unwrap();
    assert_eq!(v["accum"], 3);
    assert!(
        v["timed"].as_str().unwrap().starts_with(
            "3 micro-batches of 2 x 128 tokens (forward + backward) and 1 optimizer step"
        ),
        "{v}"
    );
    // Tokens per second count every micro-batch of the step.
    let tok_s = v["tokens_per_s"].as_f64().unwrap();
    let want = 3.0 * 2.0 * 128.0 / (v["step_ms"].as_f64().unwrap() / 1e3);
    assert!((tok_s - want).abs() / want < 1e-9, "{v}");
    // The text report says what was timed and the optimizer's share.
    let text = lab.ok(&args("2"));
    assert!(
        text.contains("timed step    2 micro-batches of 2 x 128 tokens"),
        "{text}"
    );
    assert!(text.contains("% of the step"), "{text}");
    // --help says the default is what the PyTorch reference script times.
    let help = lab.ok(&["bench", "--help"]);
    assert!(help.contains("reference_gpt.py"), "{help}");
}

#[test]
fn device_is_a_flag_of_the_commands_that_compute() {
    let lab = Lab::new();
    for cmd in [
        &["doctor"][..],
        &["data", "info", "x"],
        &["data", "embedded"],
    ] {
        let e = lab.fails(&[cmd, &["--device", "cpu"]].concat());
        assert!(e.contains("unexpected argument '--device'"), "{cmd:?}: {e}");
    }
    let e = lab.fails(&["--device", "cpu", "eval", "--checkpoint", "x"]);
    assert!(e.contains("give it after the subcommand"), "{e}");
    for cmd in ["train", "eval", "bench"] {
        let help = lab.ok(&[cmd, "--help"]);
        assert!(help.contains("--device <DEVICE>"), "{cmd}: {help}");
    }
}
