//! The human-readable output of `stacklab bench` (`--json` prints the reports as they are).

use super::{BenchReport, MemoryFigures, ModelShape, PartsReport, RunSetup};

fn print_model(setup: &RunSetup, m: &ModelShape) {
    println!(
        "config        {} ({} layers, width {}, vocab {}, {:.2} M parameters)",
        setup.config,
        m.n_layer,
        m.n_embd,
        m.vocab_size,
        m.parameters as f64 / 1e6
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
    print_model(&r.setup, &r.shape);
    println!(
        "device        {} ({}) | compute {}",
        r.setup.device, r.setup.cpu_wait_policy, r.setup.compute
    );
    println!("timed step    {} (--accum {})", r.timed, r.accum);
    println!(
        "steps         {} timed after {} warm-up",
        r.shape.steps, r.shape.warmup_steps
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
    print_model(&r.setup, &r.shape);
    println!(
        "device        {} ({}) | training compute {} (evaluation fp32)",
        r.setup.device, r.setup.cpu_wait_policy, r.setup.compute
    );
    println!(
        "batch         {} x {} tokens; each part {} calls timed after {} warm-up",
        r.setup.batch, r.shape.seq_len, r.shape.steps, r.shape.warmup_steps
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
