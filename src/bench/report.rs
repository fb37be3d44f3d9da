//! The human-readable output of `stacklab bench` (`--json` prints the reports as they are).

use super::{BenchReport, MemoryFigures, PartsReport};

fn print_model(config: &str, n_layer: i64, n_embd: i64, vocab: i64, params: i64) {
    println!(
        "config        {config} ({n_layer} layers, width {n_embd}, vocab {vocab}, {:.2} M parameters)",
        params as f64 / 1e6
    );
}

fn print_memory(m: &MemoryFigures) {
    match m.peak_memory_gib {
        Some(p) => println!("peak memory   {p:.2} GiB ({})", m.memory_kind),
        None => println!("peak memory   n/a"),
    }
    if let (Some(a), Some(r)) = (m.max_memory_allocated_gib, m.max_memory_reserved_gib) {
        println!("allocator     {a:.2} GiB peak allocated, {r:.2} GiB peak reserved");
    }
}

pub fn print(r: &BenchReport) {
    print_model(&r.config, r.n_layer, r.n_embd, r.vocab_size, r.parameters);
    println!(
        "device        {} ({}) | compute {}",
        r.device, r.cpu_wait_policy, r.compute
    );
    println!("timed step    {} (--accum {})", r.timed, r.accum);
    println!(
        "steps         {} timed after {} warm-up",
        r.steps, r.warmup_steps
    );
    println!(
        "step          {:.1} ms: micro-batches {:.1} ms, optimizer {:.1} ms ({:.1} % of the step)",
        r.step_ms,
        r.micro_batches_ms,
        r.optimizer_ms,
        r.optimizer_share * 100.0
    );
    println!("tokens/s      {:.0}", r.tokens_per_s);
    println!(
        "model TFLOP/s {:.3} ({:.1} M FLOPs/token)",
        r.model_tflops,
        r.flops_per_token / 1e6
    );
    match (r.mfu, r.peak_tflops, &r.peak_source) {
        (Some(m), Some(p), Some(s)) => {
            println!("MFU           {:.1} % of {p} TFLOP/s ({s})", m * 100.0)
        }
        _ => println!("MFU           n/a (no known bf16 peak for this device)"),
    }
    print_memory(&r.memory);
    println!("final loss    {:.4}", r.final_loss);
}

pub fn print_parts(r: &PartsReport) {
    print_model(&r.config, r.n_layer, r.n_embd, r.vocab_size, r.parameters);
    println!(
        "device        {} ({}) | training compute {} (evaluation fp32)",
        r.device, r.cpu_wait_policy, r.compute
    );
    println!(
        "batch         {} x {} tokens; each part {} calls timed after {} warm-up",
        r.batch, r.seq_len, r.steps, r.warmup_steps
    );
    println!("{:<12} {:>10} {:>12}  timed", "part", "ms/call", "tokens/s");
    for p in &r.parts {
        let tok = p
            .tokens_per_s
            .map(|t| format!("{t:.0}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<12} {:>10.2} {:>12}  {}",
            p.part.name(),
            p.ms,
            tok,
            p.timed
        );
    }
    print_memory(&r.memory);
}
