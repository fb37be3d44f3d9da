//! `bench --nproc N`: the same timed steps in one process, then in N processes training
//! together (each its own `--accum` micro-batches of `--batch`, the gradients all-reduced
//! and Muon's Newton-Schulz sharded as in training), and how close N processes come to N
//! times one.

use serde::Serialize;

use super::BenchReport;

#[derive(Debug, Clone, Serialize)]
pub struct ScalingReport {
    pub nproc: usize,
    /// Tokens a second of one process alone, and of each of the N processes together.
    pub one_process_tokens_per_s: f64,
    pub tokens_per_s_per_process: f64,
    /// Of the N processes together.
    pub tokens_per_s: f64,
    /// The CPU threads the one-process baseline ran with (on the CPU, one process's share
    /// of the cores, as each of the N gets).
    pub one_process_threads: usize,
    /// `tokens_per_s / (nproc x one_process_tokens_per_s)`.
    pub scaling_efficiency: f64,
    pub all_reduce_bytes_per_step: i64,
    pub one_process: BenchReport,
    pub parallel: BenchReport,
}

pub fn scaling(
    one: BenchReport,
    parallel: BenchReport,
    one_process_threads: usize,
) -> ScalingReport {
    let n = parallel.world_size;
    ScalingReport {
        nproc: n,
        one_process_tokens_per_s: one.tokens_per_s,
        one_process_threads,
        tokens_per_s_per_process: parallel.tokens_per_s_per_process,
        tokens_per_s: parallel.tokens_per_s,
        scaling_efficiency: parallel.tokens_per_s / (n as f64 * one.tokens_per_s),
        all_reduce_bytes_per_step: parallel.all_reduce_bytes_per_step,
        one_process: one,
        parallel,
    }
}

pub fn print_scaling(r: &ScalingReport) {
    super::print(&r.parallel);
    println!("processes     {} (c10d)", r.nproc);
    println!(
        "tokens/s      {:.0} per process, {:.0} together; one process alone {:.0}",
        r.tokens_per_s_per_process, r.tokens_per_s, r.one_process_tokens_per_s
    );
    let on_cpu = !r.one_process.setup.device.starts_with("cuda");
    println!(
        "scaling       {:.1} % of {} x one process{}",
        r.scaling_efficiency * 100.0,
        r.nproc,
        if on_cpu {
            format!(
                " (on the CPU: one process with {} thread(s), as many as each of the {} has)",
                r.one_process_threads, r.nproc
            )
        } else {
            String::new()
        }
    );
    println!(
        "all-reduce    {:.2} MB a step (gradients in 25 MiB buckets, Muon's updates)",
        r.all_reduce_bytes_per_step as f64 / 1e6
    );
    let p = &r.parallel;
    println!(
        "overlap       {} of {} gradient bucket(s) started while the last backward ran{}",
        p.buckets_started_in_backward,
        p.gradient_buckets,
        if p.overlap { "" } else { " (--no-overlap)" }
    );
}
