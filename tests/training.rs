//! Training end to end on the embedded corpus with tiny models: learning, resume, frozen
//! embeddings, crash safety of checkpoints, failures, signals, COCONUT, seed-format weights.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::{micro_config, read_json, read_json_lines, Lab};

fn train(lab: &Lab, config: &str, name: &str, extra: &[&str]) -> PathBuf {
    let cfg = lab.write(&format!("{name}.toml"), config);
    let mut args = vec![
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        name,
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    lab.ok(&args);
    lab.checkpoints().join(name)
}

fn losses(run: &Path) -> Vec<(i64, f64)> {
    read_json_lines(&run.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| Some((r["step"].as_i64()?, r["train_loss"].as_f64()?)))
        .collect()
}

fn state(run: &Path) -> String {
    read_json(&run.join("status.json"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn checkpoint_steps(run: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step_"))
        .collect();
    v.sort();
    v
}

fn eval_loss(lab: &Lab, checkpoint: &Path, extra: &[&str]) -> f64 {
    let mut args = vec![
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    let out = lab.ok(&args);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["val_loss"].as_f64().unwrap()
}

/// W's bytes as stored in a checkpoint.
fn stored_wte(checkpoint: &Path) -> Vec<u8> {
    stacklab::device::init();
    let t =
        stacklab::model::weights::read_safetensors(&checkpoint.join("model.safetensors")).unwrap();
    let w = &t["transformer.wte.weight"];
    let n = w.numel();
    let mut bytes = vec![0u8; n * 4];
    w.copy_data_u8(&mut bytes, n);
    bytes
}

#[test]
fn run_directory_has_config_metrics_status_log_and_checkpoints() {
    let lab = Lab::new();
    let run = train(&lab, &micro_config(10, ""), "layout", &[]);
    for f in ["config.toml", "metrics.jsonl", "status.json", "train.log"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    assert_eq!(checkpoint_steps(&run), vec!["step_000005", "step_000010"]);
    let status = read_json(&run.join("status.json"));
    assert_eq!(status["state"], "done");
    assert_eq!(status["step"], 10);
    assert_eq!(status["total_steps"], 10);
    assert!(status["pid"].as_u64().unwrap() > 0);
    let rows = read_json_lines(&run.join("metrics.jsonl"));
    // Step 0 validation, then one row per step.
    assert_eq!(rows.len(), 11);
    assert!(rows[0]["val_loss"].as_f64().is_some() && rows[0]["train_loss"].is_null());
    for (i, r) in rows.iter().enumerate().skip(1) {
        assert_eq!(r["step"], i as i64);
        assert!(r["train_loss"].as_f64().unwrap().is_finite());
        assert!(r["lr_factor"].as_f64().is_some() && r["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(r["tokens_seen"], i as i64 * 8 * 32);
        assert!(r["latent_loss"].is_null());
        assert_eq!(
            r["val_loss"].is_null(),
            i % 5 != 0,
            "validation every 5 steps: row {r}"
        );
    }
    let meta = std::fs::read_to_string(run.join("step_000010/meta.toml")).unwrap();
    for key in [
        "name = \"layout/step_000010\"",
        "step = 10",
        "seed = 0",
        "tokens_seen = 2560",
        "norm_wte = \"none\"",
        "norm_lm_head = \"rms_norm\"",
        "stacklab_version",
        "git_commit",
        "created_at",
        "train_time_s",
        "device = \"cpu",
        "[[val_loss_history]]",
        "wte_sha256",
    ] {
        assert!(meta.contains(key), "meta.toml lacks {key}:\n{meta}");
    }
    // An existing run name is refused rather than overwritten.
    let cfg = lab.path("layout.toml");
    let e = lab.fails(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "layout",
    ]);
    assert!(e.contains("run `layout` already exists"), "{e}");
}

#[test]
fn tiny_config_learns_on_the_embedded_corpus() {
    let lab = Lab::new();
    // configs/tiny.toml exactly as shipped.
    lab.ok(&[
        "train", "--config", "tiny", "--name", "tiny", "--device", "cpu",
    ]);
    let run = lab.checkpoints().join("tiny");
    let vals: Vec<f64> = read_json_lines(&run.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| r["val_loss"].as_f64())
        .collect();
    let (first, last) = (vals[0], *vals.last().unwrap());
    // From about ln(4096) = 8.32 at initialisation to well below it.
    assert!(
        (first - 4096f64.ln()).abs() < 0.5,
        "initial val loss {first}"
    );
    assert!(
        last < first - 3.0,
        "val loss only went from {first} to {last}"
    );
}

fn val_losses(run: &Path) -> Vec<(i64, f64)> {
    read_json_lines(&run.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| Some((r["step"].as_i64()?, r["val_loss"].as_f64()?)))
        .collect()
}

fn final_weights(run: &Path) -> Vec<(String, tch::Tensor)> {
    stacklab::device::init();
    let last = stacklab::runs::run_dir::RunDir::new(run)
        .checkpoints()
        .pop()
        .unwrap();
    stacklab::model::weights::read_safetensors(&last.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// 20 steps straight against 7 steps, a stop, and a resume (from the checkpoint written at
/// the stop, not a periodic one): same losses, same validation, same final weights.
fn check_resume(lab: &Lab, cfg: &str, name: &str) {
    let straight = train(lab, cfg, &format!("{name}-straight"), &[]);
    let halves = train(lab, cfg, &format!("{name}-halves"), &["--stop-after", "7"]);
    assert_eq!(state(&halves), "stopped");
    assert_eq!(
        checkpoint_steps(&halves),
        vec!["step_000005", "step_000007"]
    );
    assert_eq!(losses(&halves).len(), 7);
    lab.ok(&[
        "train",
        "--resume",
        halves.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(state(&halves), "done");
    let (a, b) = (losses(&straight), losses(&halves));
    assert_eq!(a.len(), 20);
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs(),
            "{name} step {sa}: {la} straight vs {lb} resumed"
        );
    }
    let (va, vb) = (val_losses(&straight), val_losses(&halves));
    assert_eq!(
        va.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![0, 5, 10, 15, 20]
    );
    assert_eq!(va.len(), vb.len(), "{vb:?}");
    for ((sa, la), (_, lb)) in va.iter().zip(&vb) {
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs(),
            "{name} val at {sa}: {la} vs {lb}"
        );
    }
    for ((na, ta), (nb, tb)) in final_weights(&straight).iter().zip(&final_weights(&halves)) {
        assert_eq!(na, nb);
        assert!(
            ta.allclose(tb, 1e-5, 1e-6, false),
            "{name}: {na} differs after resume"
        );
    }
}

#[test]
fn resume_equals_straight_training() {
    let lab = Lab::new();
    check_resume(&lab, &micro_config(20, ""), "plain");
    // A finished run cannot be resumed again.
    let e = lab.fails(&[
        "train",
        "--resume",
        lab.checkpoints().join("plain-halves").to_str().unwrap(),
    ]);
    assert!(e.contains("already finished"), "{e}");
}

#[test]
fn resume_equals_straight_training_with_coconut_seed_mode() {
    // Seed mode reads the next step's batch: the resumed loader must peek the same one.
    let lab = Lab::new();
    check_resume(
        &lab,
        &micro_config(20, "\n[coconut]\nevery = 3\nmode = \"seed\"\n"),
        "coconut",
    );
}

#[test]
fn from_model_copies_w_and_never_changes_it() {
    let lab = Lab::new();
    let parent = train(&lab, &micro_config(5, ""), "model1", &[]);
    let parent_ckpt = parent.join("step_000005");
    // `from_model` and `seed` are top-level keys: they go before the first table.
    let cfg = format!(
        "from_model = \"{}\"\n{}",
        parent_ckpt.display(),
        micro_config(10, "").replace("seed = 0", "seed = 1")
    );
    let child = train(&lab, &cfg, "model2", &[]);
    let w_parent = stored_wte(&parent_ckpt);
    for ck in ["step_000005", "step_000010"] {
        assert!(stored_wte(&child.join(ck)) == w_parent, "{ck}: W changed");
    }
    let meta = std::fs::read_to_string(child.join("step_000010/meta.toml")).unwrap();
    let parent_meta = std::fs::read_to_string(parent_ckpt.join("meta.toml")).unwrap();
    let hash = parent_meta
        .lines()
        .find_map(|l| l.strip_prefix("wte_sha256 = "))
        .unwrap();
    assert!(meta.contains("wte_frozen = true"), "{meta}");
    assert!(
        meta.contains("[from_model]") && meta.contains("name = \"model1/step_000005\""),
        "{meta}"
    );
    assert!(
        meta.contains(&format!("wte_sha256 = {hash}")),
        "lineage hash {hash} in\n{meta}"
    );
    // The blocks did train.
    let l = losses(&child);
    assert!(l.last().unwrap().1 < l[0].1);
    // No AdamW state for a frozen W.
    let opt = stacklab::model::weights::read_safetensors(
        &child.join("step_000010/optimizer.safetensors"),
    )
    .unwrap();
    assert!(!opt.contains_key("adamw.exp_avg"));
}

#[test]
fn kill_9_mid_checkpoint_leaves_only_valid_checkpoints() {
    let lab = Lab::new();
    let cfg = lab.write("crash.toml", &micro_config(20, ""));
    let out = lab
        .cmd(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--name",
            "crash",
            "--device",
            "cpu",
        ])
        .env("STACKLAB_FAULT_KILL_IN_CHECKPOINT", "10")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "killed by SIGKILL mid-checkpoint"
    );
    let run = lab.checkpoints().join("crash");
    // The half-written step 10 is a hidden temporary, not a checkpoint.
    assert_eq!(checkpoint_steps(&run), vec!["step_000005"]);
    let hidden: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".step_000010.tmp-"))
        .collect();
    assert_eq!(hidden.len(), 1, "the interrupted write is left aside");
    // The run folder resolves to its last valid checkpoint, which loads and evaluates.
    let v = eval_loss(&lab, &run, &[]);
    assert!(v.is_finite());
    // Resume from step 5 and finish; the leftovers are cleaned up.
    lab.ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(state(&run), "done");
    assert_eq!(
        checkpoint_steps(&run),
        vec!["step_000005", "step_000010", "step_000015", "step_000020"]
    );
    assert!(!std::fs::read_dir(&run).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".step_")));
    assert_eq!(losses(&run).len(), 20);
}

#[test]
fn kill_9_at_random_moments_never_leaves_a_half_checkpoint() {
    let lab = Lab::new();
    let cfg = lab.write(
        "random.toml",
        &micro_config(400, "").replace("checkpoint_every = 5", "checkpoint_every = 1"),
    );
    let run = lab.checkpoints().join("random");
    let mut checked = 0;
    for (i, extra_ms) in [0u64, 37, 111].into_iter().enumerate() {
        let before = losses_len(&run);
        let mut child = if i == 0 {
            lab.cmd(&[
                "train",
                "--config",
                cfg.to_str().unwrap(),
                "--name",
                "random",
                "--device",
                "cpu",
            ])
        } else {
            lab.cmd(&[
                "train",
                "--resume",
                run.to_str().unwrap(),
                "--device",
                "cpu",
            ])
        }
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        // Kill while it writes checkpoints: once it has made progress, at an odd moment.
        wait_for_steps(&mut child, &run, before + 3, 10);
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let cks = stacklab::runs::run_dir::RunDir::new(&run).checkpoints();
        assert!(!cks.is_empty());
        for ck in cks {
            let c = stacklab::runs::Checkpoint::open(&ck).unwrap();
            c.load_model(tch::Device::Cpu).unwrap();
            c.load_optimizer(tch::Device::Cpu).unwrap();
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

#[test]
fn nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint() {
    let lab = Lab::new();
    let cfg = micro_config(20, "").replace("checkpoint_every = 5", "checkpoint_every = 1")
        + "\n[optimizer.adamw]\nlr = 1e30\n";
    let path = lab.write("nan.toml", &cfg);
    let e = lab.fails(&[
        "train",
        "--config",
        path.to_str().unwrap(),
        "--name",
        "nan",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("non-finite"), "{e}");
    let run = lab.checkpoints().join("nan");
    let status = read_json(&run.join("status.json"));
    assert_eq!(status["state"], "failed");
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.contains("non-finite") && msg.contains("at step"),
        "{msg}"
    );
    let cks = stacklab::runs::run_dir::RunDir::new(&run).checkpoints();
    assert!(!cks.is_empty(), "the checkpoints before the failure stay");
    for ck in cks {
        let m = stacklab::runs::Checkpoint::open(&ck)
            .unwrap()
            .load_model(tch::Device::Cpu)
            .unwrap();
        for (name, t) in m.named_parameters() {
            assert!(
                t.isfinite().all().int64_value(&[]) == 1,
                "{name} in {} is not finite",
                ck.display()
            );
        }
    }
}

/// Starts a long run, sends `signal` once it has made progress, and checks the stop.
fn check_signal_stops(signal: i32, name: &str) {
    let lab = Lab::new();
    let cfg = lab.write(
        "sig.toml",
        &micro_config(400, "").replace("checkpoint_every = 5", "checkpoint_every = 1000"),
    );
    let mut child = lab
        .cmd(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--name",
            name,
            "--device",
            "cpu",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = lab.checkpoints().join(name);
    wait_for_steps(&mut child, &run, 3, 50);
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&run), "stopped");
    let step = read_json(&run.join("status.json"))["step"]
        .as_i64()
        .unwrap();
    assert!((3..400).contains(&step));
    assert_eq!(checkpoint_steps(&run), vec![format!("step_{step:06}")]);
    assert_eq!(losses(&run).len() as i64, step);
}

#[test]
fn sigint_finishes_the_step_checkpoints_and_stops() {
    check_signal_stops(libc::SIGINT, "sigint");
}

#[test]
fn sigterm_finishes_the_step_checkpoints_and_stops() {
    check_signal_stops(libc::SIGTERM, "sigterm");
}

/// Waits until `run` has logged `steps` training steps, for as long as the process lives:
/// no clock of its own (the test runner's time limit is the only one), but a run that ends
/// before then fails the test with its exit status.
fn wait_for_steps(child: &mut Child, run: &Path, steps: usize, poll_ms: u64) {
    while losses_len(run) < steps {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) after {} of the {steps} steps waited for",
                losses_len(run)
            );
        }
        std::thread::sleep(Duration::from_millis(poll_ms));
    }
}

fn losses_len(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.lines().filter(|l| l.contains("train_loss")).count())
        .unwrap_or(0)
}

#[test]
fn coconut_steps_log_latent_loss_in_every_mode() {
    let lab = Lab::new();
    let mut latent = Vec::new();
    for mode in ["shifted", "same_position", "seed"] {
        let cfg = micro_config(6, &format!("\n[coconut]\nevery = 3\nmode = \"{mode}\"\n"));
        let run = train(&lab, &cfg, &format!("coconut-{mode}"), &[]);
        let rows = read_json_lines(&run.join("metrics.jsonl"));
        for r in rows.iter().filter(|r| r["train_loss"].is_number()) {
            let step = r["step"].as_i64().unwrap();
            assert_eq!(r["latent_loss"].is_number(), step % 3 == 0, "{mode}: {r}");
        }
        latent.push(rows[3]["latent_loss"].as_f64().unwrap());
    }
    // The three modes pair latents and targets differently, so their latent losses differ.
    assert!(
        (latent[0] - latent[1]).abs() > 1e-6 && (latent[1] - latent[2]).abs() > 1e-6,
        "{latent:?}"
    );
    // Without detaching, gradients flow through the first pass too: training still works.
    let cfg = micro_config(6, "\n[coconut]\nevery = 2\ndetach = false\n");
    let run = train(&lab, &cfg, "coconut-attached", &[]);
    assert_eq!(state(&run), "done");
}

#[test]
fn seed_named_safetensors_give_the_same_loss_as_the_native_checkpoint() {
    let lab = Lab::new();
    let run = train(&lab, &micro_config(5, ""), "native", &[]);
    let ck = run.join("step_000005");
    // Write the same weights the way a PyTorch user's checkpoint of the seed holds them.
    stacklab::device::init();
    let tensors =
        stacklab::model::weights::read_safetensors(&ck.join("model.safetensors")).unwrap();
    let mut seed: Vec<(String, tch::Tensor)> = Vec::new();
    for (name, t) in &tensors {
        seed.push((format!("_orig_mod.{name}"), t.shallow_clone()));
    }
    seed.push((
        "_orig_mod.lm_head.weight".into(),
        tensors["transformer.wte.weight"].copy(),
    ));
    for i in 0..2 {
        seed.push((
            format!("_orig_mod.transformer.h.{i}.attn.rotary.inv_freq"),
            tch::Tensor::ones([16], (tch::Kind::Float, tch::Device::Cpu)),
        ));
    }
    let seed_file = lab.path("model1.safetensors");
    tch::Tensor::write_safetensors(&seed, &seed_file).unwrap();
    let native = eval_loss(&lab, &ck, &[]);
    let ds = format!(
        "{}/embedded/shakespeare-bpe4096-v1/val_*.bin",
        common::shared_data_dir().display()
    );
    let from_seed = eval_loss(
        &lab,
        &seed_file,
        &[
            "--data",
            &ds,
            "--seq-len",
            "32",
            "--tokens",
            "2048",
            "--n-head",
            "2",
        ],
    );
    assert!(
        (native - from_seed).abs() < 1e-9,
        "native {native} vs seed-format {from_seed}"
    );
    // Without the right head count the seed file is read with width/64 = 1 head: a different model.
    let one_head = eval_loss(
        &lab,
        &seed_file,
        &["--data", &ds, "--seq-len", "32", "--tokens", "2048"],
    );
    assert!((native - one_head).abs() > 1e-6);
}

/// Gradients are averaged over a step's micro-batches: one micro-batch of 8 sequences and
/// two of 4 give the same update. AdamW's and Muon's updates hardly change when every
/// gradient is scaled (a missing division would hide there), so their state is compared
/// too: Muon's momentum and AdamW's moments after one step are the averaged gradient.
#[test]
fn accumulating_two_micro_batches_of_4_updates_like_one_of_8() {
    use stacklab::config::{AdamWConfig, ModelConfig, MuonConfig, NormKind};
    use stacklab::model::{Compute, Gpt};
    use stacklab::train::{apply_optimizers, AdamW, Muon};
    use tch::{Device, Kind, Tensor};
    stacklab::device::init();
    let cfg = ModelConfig {
        vocab_size: 64,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        seq_len: 8,
        norm_wte: NormKind::None,
        norm_lm_head: NormKind::RmsNorm,
    };
    tch::manual_seed(11);
    let tokens = Tensor::randint(64, [8, 9], (Kind::Int64, Device::Cpu));
    let x = tokens.narrow(1, 0, 8);
    let y = tokens.narrow(1, 1, 8);
    let step = |micro: i64| {
        let mut model = Gpt::new(&cfg, 0, Device::Cpu);
        model.set_trainable(true);
        let mut adamw = AdamW::new(&AdamWConfig::default(), &model.wte);
        let mut muon = Muon::new(&MuonConfig::default(), &model.block_matrices(), Kind::Float);
        let accum = 8 / micro;
        for i in 0..accum {
            let _ = model.forward_backward(
                &x.narrow(0, i * micro, micro),
                &y.narrow(0, i * micro, micro),
                Compute::Fp32,
            );
        }
        apply_optimizers(&model, Some(&mut adamw), &mut muon, 1.0, accum);
        (model, adamw, muon)
    };
    let (one, adam_one, muon_one) = step(8);
    let (two, adam_two, muon_two) = step(4);
    let close = |a: &Tensor, b: &Tensor, what: &str| {
        let scale = b.abs().max().double_value(&[]);
        let err = (a - b).abs().max().double_value(&[]);
        assert!(err <= 1e-5 * scale.max(1e-12), "{what}: {err} of {scale}");
    };
    close(
        &adam_two.exp_avg,
        &adam_one.exp_avg,
        "AdamW exp_avg (0.1 x the mean gradient of W)",
    );
    close(
        &adam_two.exp_avg_sq,
        &adam_one.exp_avg_sq,
        "AdamW exp_avg_sq",
    );
    for (i, (a, b)) in muon_two.momentum.iter().zip(&muon_one.momentum).enumerate() {
        close(a, b, &format!("Muon momentum {i} (the mean gradient)"));
    }
    for ((name, a), (_, b)) in two.named_parameters().iter().zip(one.named_parameters()) {
        close(a, b, &format!("{name} after the step"));
    }
    // The comparison can fail: the sum of the two micro-batches' gradients is not the mean.
    let summed = {
        let mut model = Gpt::new(&cfg, 0, Device::Cpu);
        model.set_trainable(true);
        let mut adamw = AdamW::new(&AdamWConfig::default(), &model.wte);
        let mut muon = Muon::new(&MuonConfig::default(), &model.block_matrices(), Kind::Float);
        for i in 0..2 {
            let _ = model.forward_backward(
                &x.narrow(0, i * 4, 4),
                &y.narrow(0, i * 4, 4),
                Compute::Fp32,
            );
        }
        apply_optimizers(&model, Some(&mut adamw), &mut muon, 1.0, 1);
        muon
    };
    assert!(!summed.momentum[0].allclose(&muon_one.momentum[0], 1e-3, 1e-6, false));
}

/// A run stopped before its first checkpoint is resumed from step 0 with its saved config,
/// and says so; it then ends as a run trained straight through would.
#[test]
fn a_run_without_a_checkpoint_resumes_from_step_0() {
    let lab = Lab::new();
    let cfg = lab.write("early.toml", &micro_config(4, ""));
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "early",
        "--device",
        "cpu",
    ]);
    let run = lab.checkpoints().join("early");
    // As if killed before its first checkpoint: no step folders, a stale status and metrics.
    for ck in checkpoint_steps(&run) {
        std::fs::remove_dir_all(run.join(ck)).unwrap();
    }
    let out = lab.run(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    common::no_panic(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no complete checkpoint yet: restarting it from step 0"),
        "{err}"
    );
    assert_eq!(state(&run), "done");
    assert_eq!(checkpoint_steps(&run), vec!["step_000004"]);
    // The metrics start over: one row per step, not two.
    assert_eq!(
        losses(&run).iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("restarting it from step 0"), "{log}");
}

/// `from_model` with the parent's own seed starts the blocks identical to the parent's:
/// allowed, with a warning on stderr and in the run's log.
#[test]
fn from_model_with_the_parents_seed_warns() {
    let lab = Lab::new();
    let parent = train(&lab, &micro_config(2, ""), "p", &[]);
    let cfg = lab.write(
        "child.toml",
        &format!(
            "from_model = \"{}\"\n{}",
            parent.display(),
            micro_config(2, "")
        ),
    );
    let out = lab.run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "c",
        "--device",
        "cpu",
    ]);
    common::no_panic(&out);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: from_model") && err.contains("was trained with seed = 0 too"),
        "{err}"
    );
    let log = std::fs::read_to_string(lab.checkpoints().join("c/train.log")).unwrap();
    assert!(log.contains("was trained with seed = 0 too"), "{log}");
    // Another seed: no warning.
    let cfg = lab.write(
        "child1.toml",
        &format!(
            "from_model = \"{}\"\n{}",
            parent.display(),
            micro_config(2, "").replace("seed = 0", "seed = 1")
        ),
    );
    let out = lab.run(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "c1",
        "--device",
        "cpu",
    ]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning: from_model"));
}
