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
    let port = dist::launch::free_port().unwrap();
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
            let buckets = dist::GradBuckets::new(&refs, 100);
            assert!(buckets.len() > 1, "a small bucket size splits the gradient");
            buckets.all_reduce(world.group().unwrap(), &refs).unwrap();
            for p in &params {
                let g = p.grad().sum(Kind::Double).double_value(&[]);
                assert_eq!(g, 12.0 * size * (size + 1.0) / 2.0);
            }
            world.barrier().unwrap();
            println!("collectives ok on rank {}", world.rank);
        }
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
