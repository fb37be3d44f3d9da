//! Fidelity to the seed's code: its per-seed shard order (Python's `random.shuffle`), each
//! rank's data as its `DistributedDataLoader` reads it, its training loop from given weights,
//! and `init_from`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fixtures, read_json, read_json_lines, Lab};
use stacklab::config::ShardOrder;
use stacklab::data::{ordered_shards, shard, TrainStream};

fn python(args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(fixtures().join("seed_loader.py"))
        .args(args)
        .output()
        .expect("python3 runs (./lab.sh puts the project's venv first on PATH)");
    assert!(
        out.status.success(),
        "seed_loader.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn shard_order_is_pythons_random_shuffle_bit_for_bit() {
    let seeds: [i64; 5] = [0, 1, 1234, 99944455, (1i64 << 40) + 7];
    let lengths: Vec<usize> = (1..=50).collect();
    let want = python(&[
        "--shuffle",
        &serde_json::json!({"seeds": seeds, "lengths": lengths}).to_string(),
    ]);
    for seed in seeds {
        for n in 1..=50usize {
            let got = stacklab::data::pyrandom::shuffled_indices(n, seed);
            let w: Vec<usize> = want[format!("{seed}/{n}")]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(got, w, "seed {seed}, {n} shards");
        }
    }
}

fn write_shards(dir: &Path, sizes: &[usize]) {
    let mut x: u32 = 12345;
    for (i, &n) in sizes.iter().enumerate() {
        let toks: Vec<u16> = (0..n)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 16) as u16 % 1000
            })
            .collect();
        shard::write(&dir.join(format!("train_{i:06}.bin")), &toks).unwrap();
    }
}

#[test]
fn every_micro_batch_equals_the_seeds_distributed_loader() {
    let dir = tempfile::tempdir().unwrap();
    // Sizes that make ranks reach a shard's end at different steps (e.g. 8 ranks x 2 x 4:
    // a rank advances by 64, and rank r starts at 8r), and shards of exactly the minimum.
    write_shards(dir.path(), &[301, 257, 290, 65, 411]);
    let pattern = dir.path().join("train_*.bin").display().to_string();
    let cases = [
        // (B, T, ranks, accum, steps, seed, order)
        (2usize, 4usize, 8usize, 1usize, 30usize, 0i64, "seed"),
        (2, 4, 8, 2, 20, 1234, "seed"),
        (1, 3, 3, 2, 60, 5, "sorted"),
        (4, 4, 1, 4, 30, 1, "seed"),
        (2, 4, 2, 1, 50, 99944455, "seed"),
    ];
    for (b, t, ranks, accum, steps, seed, order) in cases {
        let want = python(&[&serde_json::json!({
            "pattern": pattern, "B": b, "T": t, "ranks": ranks, "accum": accum,
            "steps": steps, "seed": seed, "order": order,
        })
        .to_string()]);
        let want = want.as_array().unwrap();
        let files = stacklab::data::expand_glob(&pattern).unwrap();
        let order_kind = if order == "seed" {
            ShardOrder::Seed
        } else {
            ShardOrder::Sorted
        };
        let mut s =
            TrainStream::new(ordered_shards(files, order_kind, seed), b, t, ranks, accum).unwrap();
        let mut i = 0;
        for step in 0..steps {
            let batches = s.next_step().unwrap();
            assert_eq!(batches.len(), ranks * accum);
            for got in batches {
                let w = &want[i];
                let ids = |k: &str| -> Vec<i64> {
                    w[k].as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_i64().unwrap())
                        .collect()
                };
                assert_eq!(
                    got.inputs,
                    ids("inputs"),
                    "B={b} T={t} ranks={ranks} accum={accum} seed={seed}: step {step}, rank {}",
                    w["rank"]
                );
                assert_eq!(got.targets, ids("targets"));
                i += 1;
            }
        }
        assert_eq!(i, want.len());
    }
}

/// The config of the PyTorch training reference, from `init_from` the seed-named file.
fn reference_train_config(extra: &str) -> String {
    let r = read_json(&fixtures().join("reference_train.json"));
    let c = &r["config"];
    format!(
        r#"
seed = {seed}
checkpoint_every = 0
log_every = 1
init_from = "{init}"
precision = "fp32"

[model]
vocab_size = {vocab}
n_layer = {layers}
n_head = {heads}
n_embd = {width}
seq_len = {t}

[optimizer.adamw]
lr = {adamw_lr}

[optimizer.muon]
lr = {muon_lr}

[schedule]
steps = {steps}
warmdown = {warmdown}

[batch]
global_batch = {global}
micro_batch = {micro}
ranks = {ranks}

[data]
train = "{train}"
val = "{val}"
shard_order = "seed"

[eval]
val_tokens = 64
val_every = 0
{extra}
"#,
        seed = c["seed"],
        init = fixtures().join("reference_model.safetensors").display(),
        vocab = r["vocab_size"],
        layers = r["n_layer"],
        heads = r["n_head"],
        width = r["n_embd"],
        t = c["seq_len"],
        adamw_lr = c["adamw_lr"],
        muon_lr = c["muon_lr"],
        steps = c["steps"],
        warmdown = c["warmdown"],
        global = c["ranks"].as_i64().unwrap()
            * c["accum"].as_i64().unwrap()
            * c["micro_batch"].as_i64().unwrap(),
        micro = c["micro_batch"],
        ranks = c["ranks"],
        train = fixtures().join("reference_train_*.bin").display(),
        val = fixtures().join("reference_val.bin").display(),
    )
}

#[test]
fn training_from_seed_weights_follows_the_seeds_pytorch_loop() {
    let lab = Lab::new();
    let cfg = lab.write("ref.toml", &reference_train_config(""));
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "ref",
        "--device",
        "cpu",
    ]);
    let want: Vec<f64> = read_json(&fixtures().join("reference_train.json"))["train_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let run = lab.checkpoints().join("ref");
    let got: Vec<f64> = read_json_lines(&run.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| r["train_loss"].as_f64())
        .collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let rel = (g - w).abs() / w.abs();
        assert!(
            rel < 1e-5,
            "step {}: stacklab {g} vs PyTorch {w} (relative {rel:e})",
            i + 1
        );
    }
    // The lineage and the shard order are recorded.
    let meta = std::fs::read_to_string(run.join("step_000006/meta.toml")).unwrap();
    assert!(meta.contains("[init_from]"), "{meta}");
    assert!(meta.contains("reference_model.safetensors"), "{meta}");
    let order = stacklab::runs::Checkpoint::open(&run.join("step_000006"))
        .unwrap()
        .meta
        .train_data
        .shard_order;
    let py = python(&["--shuffle", r#"{"seeds": [3], "lengths": [3]}"#]);
    let want_order: Vec<String> = py["3/3"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("reference_train_{:06}.bin", i.as_u64().unwrap()))
        .collect();
    assert_eq!(order, want_order);
}

/// The CUDA numerics (bf16 matmuls and attention, fp32 residual, norms and loss, Newton-Schulz
/// in bf16), run on the CPU with `precision = "bf16"`, against the seed's loop under bf16
/// autocast from the same weights and data (`make_reference.py train-bf16`): every step's
/// loss within bf16 noise, stated as a bound relative to how far bf16 moves the loss from
/// fp32 in PyTorch itself.
#[test]
fn bf16_training_follows_the_seeds_loop_under_autocast_within_bf16_noise() {
    let lab = Lab::new();
    let cfg = lab.write(
        "ref-bf16.toml",
        &reference_train_config("").replace("precision = \"fp32\"", "precision = \"bf16\""),
    );
    lab.ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--name",
        "ref-bf16",
        "--device",
        "cpu",
    ]);
    let losses = |file: &str| -> Vec<f64> {
        read_json(&fixtures().join(file))["train_losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (torch_bf16, torch_fp32) = (
        losses("reference_train_bf16.json"),
        losses("reference_train.json"),
    );
    let run = lab.checkpoints().join("ref-bf16");
    let got: Vec<f64> = read_json_lines(&run.join("metrics.jsonl"))
        .iter()
        .filter_map(|r| r["train_loss"].as_f64())
        .collect();
    assert_eq!(got.len(), torch_bf16.len());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("compute Bf16"), "{log}");
    for i in 0..got.len() {
        let ours = (got[i] - torch_bf16[i]).abs();
        let bf16_shift = (torch_bf16[i] - torch_fp32[i]).abs();
        eprintln!(
            "step {}: stacklab bf16 {:.6} PyTorch bf16 {:.6} fp32 {:.6}: |ours - bf16| {ours:.2e}, |bf16 - fp32| {bf16_shift:.2e}",
            i + 1,
            got[i],
            torch_bf16[i],
            torch_fp32[i]
        );
        // bf16 keeps 8 bits: a loss near 6 is resolved to about 6 * 2^-8 = 0.023 per
        // rounding; the two bf16 runs round in different places, so they may differ by as
        // much as bf16 differs from fp32, but not by more than a few times that.
        assert!(
            ours <= 3.0 * bf16_shift.max(2e-4),
            "step {}: stacklab bf16 {} vs PyTorch bf16 {} (PyTorch fp32 {})",
            i + 1,
            got[i],
            torch_bf16[i],
            torch_fp32[i]
        );
    }
    // And it is a bf16 run, not an fp32 one: it leaves the fp32 losses by more than the fp32
    // comparison's 1e-5.
    assert!(
        got.iter()
            .zip(&torch_fp32)
            .any(|(g, w)| (g - w).abs() / w.abs() > 1e-5),
        "{got:?} equals the fp32 losses"
    );
}

#[test]
fn resume_restores_every_ranks_position() {
    // Two ranks over the reference shards, stopped mid-run and resumed: the same losses.
    let lab = Lab::new();
    let extra = "";
    let mut cfg = reference_train_config(extra).replace("steps = 6", "steps = 12");
    cfg = cfg.replace("warmdown = 3", "warmdown = 4");
    let path = lab.write("r.toml", &cfg);
    for (name, stop) in [("straight", None), ("halves", Some("5"))] {
        let mut args = vec![
            "train",
            "--config",
            path.to_str().unwrap(),
            "--name",
            name,
            "--device",
            "cpu",
        ];
        if let Some(s) = stop {
            args.extend(["--stop-after", s]);
        }
        lab.ok(&args);
    }
    let halves = lab.checkpoints().join("halves");
    lab.ok(&[
        "train",
        "--resume",
        halves.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let losses = |run: &str| -> Vec<f64> {
        read_json_lines(&lab.checkpoints().join(run).join("metrics.jsonl"))
            .iter()
            .filter_map(|r| r["train_loss"].as_f64())
            .collect()
    };
    let (a, b) = (losses("straight"), losses("halves"));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "per-rank positions restored exactly");
}

#[test]
fn init_from_starts_from_a_checkpoints_weights_and_composes_with_from_model() {
    let lab = Lab::new();
    let base = common::micro_config(5, "");
    let p1 = lab.write("m1.toml", &base);
    lab.ok(&[
        "train",
        "--config",
        p1.to_str().unwrap(),
        "--name",
        "m1",
        "--device",
        "cpu",
    ]);
    let m1 = lab.checkpoints().join("m1");
    let eval = |ck: &Path| -> f64 {
        let out = lab.ok(&[
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ]);
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["val_loss"]
            .as_f64()
            .unwrap()
    };
    // Continue m1's weights in a new run: its step-0 validation is m1's loss.
    let cont = format!(
        "init_from = \"{}\"\n{}",
        m1.display(),
        base.replace("seed = 0", "seed = 5")
    );
    let p2 = lab.write("cont.toml", &cont);
    lab.ok(&[
        "train",
        "--config",
        p2.to_str().unwrap(),
        "--name",
        "cont",
        "--device",
        "cpu",
        "--stop-after",
        "1",
    ]);
    let rows = read_json_lines(&lab.checkpoints().join("cont/metrics.jsonl"));
    let v0 = rows[0]["val_loss"].as_f64().unwrap();
    let want = eval(&m1);
    assert!(
        (v0 - want).abs() < 1e-6 * want,
        "step-0 loss {v0} vs m1 {want}"
    );
    let meta =
        std::fs::read_to_string(lab.checkpoints().join("cont/step_000001/meta.toml")).unwrap();
    assert!(
        meta.contains("[init_from]") && meta.contains("name = \"m1/step_000005\""),
        "{meta}"
    );
    // With from_model too: W is m1's and frozen, the blocks start from m1's.
    let both = format!(
        "init_from = \"{m}\"\nfrom_model = \"{m}\"\n{}",
        base.replace("seed = 0", "seed = 6"),
        m = m1.display()
    );
    let p3 = lab.write("both.toml", &both);
    lab.ok(&[
        "train",
        "--config",
        p3.to_str().unwrap(),
        "--name",
        "both",
        "--device",
        "cpu",
    ]);
    let meta =
        std::fs::read_to_string(lab.checkpoints().join("both/step_000005/meta.toml")).unwrap();
    assert!(
        meta.contains("wte_frozen = true")
            && meta.contains("[init_from]")
            && meta.contains("[from_model]"),
        "{meta}"
    );
    // A missing init_from is refused before a run folder exists.
    let bad = format!("init_from = \"nope\"\n{base}");
    let p4 = lab.write("bad.toml", &bad);
    let e = lab.fails(&[
        "train",
        "--config",
        p4.to_str().unwrap(),
        "--name",
        "bad",
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("init_from") && e.contains("`nope` not found"),
        "{e}"
    );
    assert!(!lab.checkpoints().join("bad").exists());
}
