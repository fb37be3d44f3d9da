//! Data-parallel training on c10d (Gloo on the CPU): collectives across real processes,
//! their timeout, and training in several processes against one.
//!
//! The collective tests start this test binary again as each process (`child` below, run
//! with `--ignored --exact`), with the variables torchrun would set.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use stacklab::dist::{self, ReduceOp, World};
use tch::{Device, Kind, Tensor};

const CHILD: &str = "child";
const MODE: &str = "STACKLAB_TEST_DIST_MODE";

/// Gloo is compiled in only where its headers were found: say so, and skip.
fn gloo_or_skip() -> bool {
    if !dist::has_gloo() {
        println!("skipped: this build has no Gloo ({})", dist::gloo_build());
        return false;
    }
    true
}

fn run_children(mode: &str, world: usize, timeout_s: u64) -> Vec<Output> {
    let port = stacklab::jobs::ranks::free_port().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&exe)
                .args([
                    CHILD,
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(MODE, format!("{mode}:{timeout_s}"))
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("OMP_NUM_THREADS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One process of the collective tests (run only by `run_children`).
#[test]
#[ignore]
fn child() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let (mode, timeout) = mode.split_once(':').unwrap();
    let timeout = Duration::from_secs(timeout.parse().unwrap());
    let launch = dist::env::from_env().unwrap().unwrap();
    let world = World::connect(launch, Device::Cpu, timeout).unwrap();
    let (rank, size) = (world.rank as f64, world.size as f64);
    match mode {
        "collectives" => {
            let a = Tensor::from_slice(&[rank + 1.0, 10.0 * rank]).to_kind(Kind::Float);
            let b = Tensor::ones([1000], (Kind::Double, Device::Cpu)) * rank;
            world.all_reduce(&[&a, &b], ReduceOp::Sum).unwrap();
            let want_a = [size * (size + 1.0) / 2.0, 10.0 * size * (size - 1.0) / 2.0];
            assert_eq!(Vec::<f32>::try_from(&a).unwrap(), want_a.map(|v| v as f32));
            assert_eq!(
                b.sum(Kind::Double).double_value(&[]),
                1000.0 * size * (size - 1.0) / 2.0
            );
            let m = Tensor::from_slice(&[rank]);
            world.all_reduce(&[&m], ReduceOp::Max).unwrap();
            assert_eq!(m.double_value(&[0]), size - 1.0);
            let c = Tensor::from_slice(&[rank, rank * 2.0]);
            world.broadcast(&[&c], 1).unwrap();
            assert_eq!(Vec::<f64>::try_from(&c).unwrap(), vec![1.0, 2.0]);
            let params: Vec<Tensor> = (0..3)
                .map(|_| Tensor::ones([3, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true))
                .collect();
            let loss = params.iter().map(|p| p * (rank + 1.0)).sum::<Tensor>();
            loss.sum(Kind::Float).backward();
            let refs: Vec<&Tensor> = params.iter().collect();
            // 48-byte gradients, 100-byte buckets: two buckets (two, then one).
            let group = world.group().unwrap();
            let buckets = dist::GradBuckets::new(group, &refs, 100, false).unwrap();
            assert!(buckets.len() > 1, "a small bucket size splits the gradient");
            buckets.all_reduce(group).unwrap();
            for p in &params {
                let g = p.grad().sum(Kind::Double).double_value(&[]);
                assert_eq!(g, 12.0 * size * (size + 1.0) / 2.0);
            }
            assert_eq!(buckets.started_in_backward(), 0);
            world.barrier().unwrap();
            println!("collectives ok on rank {}", world.rank);
        }
        "overlap" => overlap_child(&world),
        "stall" | "die" => {
            if world.rank == 1 {
                if mode == "stall" {
                    std::thread::sleep(timeout + Duration::from_secs(2));
                }
                std::process::exit(0);
            }
            let t0 = Instant::now();
            let x = Tensor::ones([4], (Kind::Float, Device::Cpu));
            let e = world.all_reduce(&[&x], ReduceOp::Sum).unwrap_err();
            println!("failed after {:.1}s: {e:#}", t0.elapsed().as_secs_f64());
            std::process::exit(3);
        }
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn all_reduce_broadcast_and_barrier_across_processes_on_gloo() {
    if !gloo_or_skip() {
        return;
    }
    for world in [2, 3] {
        let outs = run_children("collectives", world, 60);
        for (rank, o) in outs.iter().enumerate() {
            assert!(o.status.success(), "rank {rank} of {world}:\n{}", text(o));
            assert!(text(o).contains(&format!("collectives ok on rank {rank}")));
        }
    }
}

/// A chain of layers whose gradients accumulate over two micro-batches; the second backward
/// is armed, so the buckets start from the gradient hooks, in order, except the one of a
/// layer the second micro-batch does not use (it starts after backward).
fn overlap_child(world: &World) {
    let (rank, size) = (world.rank as f64, world.size as f64);
    let group = world.group().unwrap();
    tch::manual_seed(11);
    let layers: Vec<Tensor> = (0..6)
        .map(|_| (Tensor::randn([8, 8], (Kind::Float, Device::Cpu)) * 0.3).set_requires_grad(true))
        .collect();
    let refs: Vec<&Tensor> = layers.iter().collect();
    // 256-byte gradients, 600-byte buckets: layers (5, 4), (3, 2), (1, 0).
    let buckets = dist::GradBuckets::new(group, &refs, 600, true).unwrap();
    assert_eq!(buckets.plan().sizes, vec![2, 2, 2]);
    let input = |k: f64| Tensor::ones([2, 8], (Kind::Float, Device::Cpu)) * (rank + 1.0 + k);
    let forward = |x: Tensor, skip: Option<usize>| {
        let mut h = x;
        for (i, w) in layers.iter().enumerate() {
            if Some(i) != skip {
                h = h.matmul(w).tanh();
            }
        }
        h.sum(Kind::Float)
    };
    // The same sums computed by hand: every process's two micro-batches, summed.
    let expected: Vec<Tensor> = {
        let mut total: Vec<Tensor> = layers.iter().map(|w| w.zeros_like()).collect();
        for r in 0..world.size {
            for (k, skip) in [(0.0, None), (1.0, Some(0))] {
                let ws: Vec<Tensor> = layers
                    .iter()
                    .map(|w| w.detach().copy().set_requires_grad(true))
                    .collect();
                let mut h = Tensor::ones([2, 8], (Kind::Float, Device::Cpu)) * (r as f64 + 1.0 + k);
                for (i, w) in ws.iter().enumerate() {
                    if Some(i) != skip {
                        h = h.matmul(w).tanh();
                    }
                }
                h.sum(Kind::Float).backward();
                for (t, w) in total.iter_mut().zip(&ws) {
                    let g = w.grad();
                    if g.defined() {
                        *t = &*t + g;
                    }
                }
            }
        }
        total
    };
    for step in 0..2 {
        forward(input(0.0), None).backward();
        buckets.arm();
        // Layer 0 unused: its bucket (and only it) waits until after backward.
        forward(input(1.0), Some(0)).backward();
        buckets.all_reduce(group).unwrap();
        assert_eq!(buckets.started_in_backward(), 2, "step {step}");
        for (i, (w, e)) in layers.iter().zip(&expected).enumerate() {
            let got = w.grad();
            let d = (&got - e).abs().max().double_value(&[]);
            assert!(d < 1e-5, "layer {i}: off by {d}");
        }
        for w in &layers {
            w.shallow_clone().zero_grad();
        }
    }
    // Unarmed, nothing starts in backward.
    forward(input(0.0), None).backward();
    buckets.all_reduce(group).unwrap();
    assert_eq!(buckets.started_in_backward(), 0);
    // A parameter without a gradient is this process's own failure, named by its number in
    // the list given, and the next all-reduce works.
    let fresh = Tensor::zeros([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let other = dist::GradBuckets::new(group, &[&layers[0], &fresh], 1 << 20, true).unwrap();
    let e = format!("{:#}", other.all_reduce(group).unwrap_err());
    assert!(
        e.contains("parameter #1 has no gradient") && !e.contains("another process"),
        "{e}"
    );
    fresh.sum(Kind::Float).backward();
    other.all_reduce(group).unwrap();
    assert_eq!(
        fresh.grad().sum(Kind::Double).double_value(&[]),
        3.0 * size,
        "the sum of every process's ones"
    );
    world.barrier().unwrap();
    println!("overlap ok on rank {} of {size}", world.rank);
}

#[test]
fn buckets_start_while_backward_runs_and_sum_what_it_accumulated() {
    if !gloo_or_skip() {
        return;
    }
    let outs = run_children("overlap", 2, 60);
    for (rank, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "rank {rank}:\n{}", text(o));
        assert!(text(o).contains(&format!("overlap ok on rank {rank}")));
    }
}

#[test]
fn a_collective_fails_within_the_timeout_when_a_process_stalls_or_dies() {
    if !gloo_or_skip() {
        return;
    }
    for mode in ["stall", "die"] {
        let t0 = Instant::now();
        let outs = run_children(mode, 2, 3);
        let elapsed = t0.elapsed().as_secs_f64();
        let out = text(&outs[0]);
        assert_eq!(outs[0].status.code(), Some(3), "{mode}: {out}");
        assert!(
            out.contains("an all-reduce across the 2 processes failed on rank 0")
                && out.contains("3s collective timeout"),
            "{mode}: {out}"
        );
        let secs: f64 = out
            .split("failed after ")
            .nth(1)
            .and_then(|s| s.split('s').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        println!("{mode}: rank 0's all-reduce failed after {secs:.1}s (whole test {elapsed:.1}s)");
        assert!(secs < 3.0 + 5.0, "{mode}: {secs}s is past the 3s timeout");
    }
}

// ---- Training in several processes against one ----

use common::{micro_config, read_json, read_json_lines, Lab};
use std::path::{Path, PathBuf};

/// The micro config with `ranks` logical ranks of one micro-batch each (8 sequences a step).
fn ranks_config(steps: i64, ranks: i64) -> String {
    micro_config(steps, "")
        .replace("ranks = 1", &format!("ranks = {ranks}"))
        .replace("micro_batch = 4", &format!("micro_batch = {}", 8 / ranks))
}

/// (step, loss) pairs.
type Curve = Vec<(i64, f64)>;

/// (step, train loss) and (step, val loss) of a run.
fn losses(run: &Path) -> (Curve, Curve) {
    let rows = read_json_lines(&run.join("metrics.jsonl"));
    let pick = |key: &str| {
        rows.iter()
            .filter_map(|r| Some((r["step"].as_i64()?, r[key].as_f64()?)))
            .collect::<Vec<_>>()
    };
    (pick("train_loss"), pick("val_loss"))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-30)
}

/// The largest relative difference between two runs' losses (same steps required).
fn max_loss_diff(a: &Path, b: &Path) -> f64 {
    let (ta, va) = losses(a);
    let (tb, vb) = losses(b);
    assert_eq!(
        ta.len(),
        tb.len(),
        "train loss rows of {} and {}",
        a.display(),
        b.display()
    );
    assert_eq!(va.len(), vb.len(), "val loss rows");
    let mut worst: f64 = 0.0;
    for (x, y) in ta.iter().zip(&tb).chain(va.iter().zip(&vb)) {
        assert_eq!(x.0, y.0, "steps differ");
        worst = worst.max(rel(x.1, y.1));
    }
    worst
}

/// How far apart two runs' final weights (their latest checkpoints) are, per tensor, the
/// worst over the tensors: the relative Frobenius distance `|a - b| / |a|` and the largest
/// element difference over the largest element `max|a - b| / max|a|`.
fn weight_diffs(a: &Path, b: &Path) -> (f64, f64) {
    let load = |run: &Path| {
        let ck = stacklab::runs::run_dir::RunDir::new(run)
            .checkpoints()
            .pop()
            .unwrap();
        stacklab::runs::Checkpoint::open(&ck)
            .unwrap()
            .load_model(Device::Cpu)
            .unwrap()
    };
    let (ma, mb) = (load(a), load(b));
    let (mut frob, mut elem): (f64, f64) = (0.0, 0.0);
    for ((name, x), (_, y)) in ma.named_parameters().into_iter().zip(mb.named_parameters()) {
        let d = x - y;
        let f = d.norm().double_value(&[]) / x.norm().double_value(&[]);
        let e = d.abs().max().double_value(&[]) / x.abs().max().double_value(&[]);
        assert!(f.is_finite() && e.is_finite(), "{name}");
        frob = frob.max(f);
        elem = elem.max(e);
    }
    (frob, elem)
}

fn train(lab: &Lab, config: &str, name: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "train", "--config", config, "--name", name, "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    lab.ok(&args);
    lab.checkpoints().join(name)
}

fn torchrun() -> Option<PathBuf> {
    let venv = std::env::var_os("STACKLAB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join(".venv"));
    Some(venv.join("bin/torchrun")).filter(|p| p.is_file())
}

#[test]
fn processes_train_as_one_process_with_the_same_ranks() {
    if !gloo_or_skip() {
        return;
    }
    let lab = Lab::new();
    for ranks in [2, 4] {
        lab.write(&format!("r{ranks}.toml"), &ranks_config(6, ranks));
        let config = format!("r{ranks}.toml");
        let one = train(&lab, &config, &format!("one{ranks}"), &[]);
        let n = ranks.to_string();
        let many = train(&lab, &config, &format!("many{ranks}"), &["--nproc", &n]);
        let (dl, (dw, de)) = (max_loss_diff(&one, &many), weight_diffs(&one, &many));
        println!("{ranks} processes vs 1: relative differences: losses {dl:.2e}, weights {dw:.2e} (largest element {de:.2e})");
        assert!(dl <= 1e-6 && dw <= 1e-6, "{ranks} processes: {dl} {dw}");
        if ranks == 2 {
            // Two partial sums add up the same in either order: the same bits.
            assert_eq!((dl, de), (0.0, 0.0), "2 processes");
        }
        // The micro model's gradients (every weight, fp32) fit one bucket, started by the
        // last backward's hook.
        let log = std::fs::read_to_string(many.join("train.log")).unwrap();
        let weights: i64 = stacklab::runs::Checkpoint::open(
            &stacklab::runs::run_dir::RunDir::new(&many)
                .checkpoints()
                .pop()
                .unwrap(),
        )
        .unwrap()
        .load_model(Device::Cpu)
        .unwrap()
        .num_parameters();
        let mb = format!("{:.1} MB a step", 4.0 * weights as f64 / 1e6);
        assert!(
            log.contains(&format!("all-reduce: 1 gradient bucket(s), {mb}"))
                && log.contains("; 1 started while the last backward pass ran"),
            "{mb}: {log}"
        );
        if ranks == 2 {
            // Started after backward instead: the same sums, the same bits.
            let late = train(&lab, &config, "late2", &["--nproc", "2", "--no-overlap"]);
            assert_eq!(max_loss_diff(&many, &late), 0.0);
            assert_eq!(weight_diffs(&many, &late), (0.0, 0.0));
            let log = std::fs::read_to_string(late.join("train.log")).unwrap();
            assert!(
                log.contains("; 0 started while the last backward pass ran"),
                "{log}"
            );
        }
        let status = read_json(&many.join("status.json"));
        assert_eq!(status["state"], "done");
        assert_eq!(status["world_size"], ranks);
        for r in 1..ranks {
            let log = std::fs::read_to_string(many.join(format!("train.rank{r}.log"))).unwrap();
            assert!(log.contains(&format!("rank {r} of {ranks}")), "{log}");
        }
        assert!(!one.join("train.rank1.log").exists());
    }
    // COCONUT-parallel steps run two backward passes a micro-batch (latents detached):
    // only the second may start the buckets, or they would carry half the gradient.
    let coconut = ["--set", "coconut.every=2"];
    let one = train(&lab, "r2.toml", "coconut1", &coconut);
    let many = train(
        &lab,
        "r2.toml",
        "coconut2",
        &[&coconut[..], &["--nproc", "2"]].concat(),
    );
    let (dl, (dw, _)) = (max_loss_diff(&one, &many), weight_diffs(&one, &many));
    println!("COCONUT, 2 processes vs 1: losses {dl:.2e}, weights {dw:.2e}");
    // Not bit for bit: one process adds rank 1's two passes to rank 0's sum one by one, two
    // processes add their two sums. Buckets sent after the first pass put the weights 7e-2 off.
    assert!(
        dl <= 1e-6 && dw <= 1e-6,
        "COCONUT steps in 2 processes: {dl} {dw}"
    );
    assert!(losses(&one).0.len() >= 6);
    // torchrun's own launch (its agent hosts the store) gives the same.
    let Some(torchrun) = torchrun() else {
        println!("skipped the torchrun run: no torchrun in the venv");
        return;
    };
    let mut cmd = Command::new(torchrun);
    cmd.args([
        "--standalone",
        "--nproc-per-node",
        "2",
        "--no-python",
        common::bin(),
    ])
    .args([
        "train",
        "--config",
        "r2.toml",
        "--name",
        "torchrun2",
        "--device",
        "cpu",
    ])
    .current_dir(lab.dir.path())
    .env("STACKLAB_DATA_DIR", common::shared_data_dir())
    .env("STACKLAB_CHECKPOINT_DIR", lab.checkpoints())
    .env("STACKLAB_CONFIG_DIR", common::repo().join("configs"));
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "torchrun:\n{}", text(&o));
    let run = lab.checkpoints().join("torchrun2");
    let one = lab.checkpoints().join("one2");
    let (dl, (dw, de)) = (max_loss_diff(&one, &run), weight_diffs(&one, &run));
    println!(
        "torchrun, 2 processes vs 1: losses {dl:.2e}, weights {dw:.2e} (largest element {de:.2e})"
    );
    assert!(dl <= 1e-6 && dw <= 1e-6, "torchrun: {dl} {dw}");
    // Rank 1 (not under rank 0 with torchrun) recorded itself in the run's folder, so the
    // System pane can name its GPU process with the run.
    let rec = read_json(&run.join(".rank1.json"));
    assert!(rec["pid"].as_u64().unwrap() > 0, "{rec}");
}

#[test]
fn a_run_stopped_in_one_process_resumes_in_two_with_the_same_losses() {
    if !gloo_or_skip() {
        return;
    }
    let lab = Lab::new();
    lab.write("r2.toml", &ranks_config(10, 2));
    let whole = train(&lab, "r2.toml", "whole", &[]);
    let split = train(&lab, "r2.toml", "split", &["--stop-after", "5"]);
    assert_eq!(common::state(&split), "stopped");
    let p = split.display().to_string();
    lab.ok(&["train", "--resume", &p, "--nproc", "2", "--device", "cpu"]);
    assert_eq!(common::state(&split), "done");
    common::assert_one_row_per_step(&split, 10);
    let (dl, (dw, de)) = (max_loss_diff(&whole, &split), weight_diffs(&whole, &split));
    println!("1 process, then 2 from step 5, vs 1 throughout: losses {dl:.2e}, weights {dw:.2e} (largest element {de:.2e})");
    assert!(dl <= 1e-6 && dw <= 1e-6, "{dl} {dw}");
}

/// Starts process `rank` of `world` of a training by hand, as torchrun would.
fn start_rank(
    lab: &Lab,
    args: &[&str],
    rank: usize,
    world: usize,
    port: u16,
) -> std::process::Child {
    lab.cmd(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_process_fails_the_run_within_the_timeout_and_it_resumes() {
    if !gloo_or_skip() {
        return;
    }
    let lab = Lab::new();
    lab.write("long.toml", &ranks_config(2000, 2));
    let port = stacklab::jobs::ranks::free_port().unwrap();
    let args = [
        "train",
        "--config",
        "long.toml",
        "--name",
        "k",
        "--device",
        "cpu",
        "--dist-timeout",
        "5",
    ];
    let r0 = start_rank(&lab, &args, 0, 2, port);
    let mut r1 = start_rank(&lab, &args, 1, 2, port);
    let run = lab.checkpoints().join("k");
    let t0 = Instant::now();
    while !run.join("step_000005").exists() || !run.join("metrics.jsonl").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint at step 5"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r1.kill().unwrap();
    let killed = Instant::now();
    let _ = r1.wait();
    let out = r0.wait_with_output().unwrap();
    let secs = killed.elapsed().as_secs_f64();
    let status = read_json(&run.join("status.json"));
    println!(
        "rank 0 ended {secs:.1}s after rank 1 was killed: {}",
        status["message"]
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(secs < 5.0 + 10.0, "{secs}s");
    assert_eq!(status["state"], "failed", "{status}");
    let msg = status["message"].as_str().unwrap();
    assert!(
        msg.contains("across the 2 processes failed")
            && msg.contains("the last good checkpoint is step"),
        "{msg}"
    );
    let p = run.display().to_string();
    let last = stacklab::runs::run_dir::RunDir::new(&run)
        .checkpoints()
        .len();
    assert!(last >= 1);
    lab.ok(&[
        "train",
        "--resume",
        &p,
        "--nproc",
        "2",
        "--device",
        "cpu",
        "--stop-after",
        "12",
    ]);
    assert_eq!(common::state(&run), "stopped");
}

#[test]
fn bad_environments_are_refused_with_the_variable_named() {
    let lab = Lab::new();
    lab.write("r2.toml", &ranks_config(4, 2));
    let args = [
        "train", "--config", "r2.toml", "--name", "bad", "--device", "cpu",
    ];
    let refused = |env: &[(&str, &str)], want: &str| {
        let mut c = lab.cmd(&args);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        common::no_panic(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{env:?}: {err}");
        assert!(
            !lab.checkpoints().join("bad").exists(),
            "{env:?} left a run folder"
        );
    };
    let base = [("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29999")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    refused(
        &with(&[("RANK", "0"), ("WORLD_SIZE", "3")]),
        "WORLD_SIZE = 3 does not divide batch.ranks = 2",
    );
    refused(
        &with(&[("RANK", "2"), ("WORLD_SIZE", "2")]),
        "RANK = 2 is out of range for WORLD_SIZE = 2",
    );
    refused(&with(&[("RANK", "x"), ("WORLD_SIZE", "2")]), "RANK = `x`");
    refused(
        &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")],
        "MASTER_ADDR is not set",
    );
    refused(
        &with(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "3"),
            ("SLURM_LOCALID", "0"),
        ]),
        "SLURM_NTASKS = 3 does not divide",
    );
    let o = lab.run(&[
        "train", "--config", "r2.toml", "--name", "bad", "--device", "cpu", "--nproc", "3",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--nproc = 3 does not divide batch.ranks = 2"),
        "{err}"
    );
    if !gloo_or_skip() {
        return;
    }
    // A port in use on rank 0's host.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let env = [
        ("RANK", "0"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", port.as_str()),
    ];
    refused(&env, &format!("MASTER_PORT = {port}: the port is in use"));
}

#[test]
fn bench_nproc_reports_tokens_per_process_and_scaling() {
    if !gloo_or_skip() {
        return;
    }
    let lab = Lab::new();
    lab.write("m.toml", &micro_config(5, ""));
    let out = lab.ok(&[
        "bench", "--config", "m.toml", "--nproc", "2", "--steps", "3", "--warmup", "1", "--json",
        "--device", "cpu",
    ]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let f = |k: &str| r[k].as_f64().unwrap();
    println!(
        "bench --nproc 2 (micro model, CPU): one process {:.0} tok/s; 2 processes {:.0} tok/s each, {:.0} together; efficiency {:.2}; all-reduce {} bytes a step",
        f("one_process_tokens_per_s"),
        f("tokens_per_s_per_process"),
        f("tokens_per_s"),
        f("scaling_efficiency"),
        r["all_reduce_bytes_per_step"]
    );
    assert_eq!(r["nproc"], 2);
    assert_eq!(r["parallel"]["world_size"], 2);
    assert_eq!(r["one_process"]["world_size"], 1);
    assert!(
        (f("tokens_per_s") - 2.0 * f("tokens_per_s_per_process")).abs() < 1e-6 * f("tokens_per_s")
    );
    let eff = f("scaling_efficiency");
    assert!(eff > 0.0 && eff.is_finite(), "{eff}");
    assert!(
        (eff - f("tokens_per_s") / (2.0 * f("one_process_tokens_per_s"))).abs() < 1e-9,
        "{eff}"
    );
    // The baseline ran with one process's share of the cores, as each of the two had.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("OMP_NUM_THREADS").is_none() {
        assert_eq!(
            r["one_process_threads"].as_u64(),
            Some((cores / 2).max(1) as u64)
        );
    }
    // The micro model's gradients (every parameter, fp32) and Muon's updates (fp32 on the CPU).
    let params = r["parallel"]["parameters"].as_i64().unwrap();
    let blocks = 2 * 12 * 64 * 64;
    assert_eq!(
        r["all_reduce_bytes_per_step"].as_i64().unwrap(),
        4 * params + 4 * blocks
    );
    // Its gradients fit one 25 MiB bucket, started by the last backward's hook; with
    // --no-overlap after backward.
    let p = &r["parallel"];
    assert_eq!(
        (p["gradient_buckets"].as_u64(), p["overlap"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(p["buckets_started_in_backward"], 1);
    let out = lab.ok(&[
        "bench",
        "--config",
        "m.toml",
        "--nproc",
        "2",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--no-overlap",
    ]);
    assert!(
        out.contains("overlap       0 of 1 gradient bucket(s) started while the last backward ran (--no-overlap)"),
        "{out}"
    );
}
