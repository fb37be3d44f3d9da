//! `train` and `bench`: the commands that run training steps from a config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::DeviceArg;
use crate::config::TrainConfig;
use crate::train::{TrainOptions, TrainOutcome};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Config file, or a name in the config dir (e.g. tiny).
    #[arg(long, required_unless_present = "resume")]
    pub config: Option<String>,
    /// Override a config key, e.g. --set model.n_layer=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run name (the run folder under the checkpoint dir); default <config>-<date>-<time>.
    #[arg(long)]
    pub name: Option<String>,
    /// Continue a run folder from its latest checkpoint (same data position, optimizer state, schedule).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "set", "name"])]
    pub resume: Option<PathBuf>,
    /// Stop once this global step is done, with a checkpoint (status `stopped`, resumable).
    #[arg(long, value_name = "STEP")]
    pub stop_after: Option<i64>,
    /// Train in N processes on this machine (data parallelism on c10d: Gloo on the CPU,
    /// NCCL with one GPU each); N must divide batch.ranks. Under torchrun or srun leave it out.
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// Seconds any collective of a parallel training may wait before the training fails
    /// (a process that died or hangs).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub dist_timeout: u64,
    /// In several processes, start the gradients' all-reduce after the step's last backward
    /// pass instead of bucket by bucket while it runs (the same sums; for comparison).
    #[arg(long)]
    pub no_overlap: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Config to benchmark; default gpt2-small-seed on CUDA, tiny on the CPU.
    #[arg(long)]
    pub config: Option<String>,
    /// Override a config key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sequences per micro-batch (default: the config's batch.micro_batch).
    #[arg(long)]
    pub batch: Option<i64>,
    /// Micro-batches (forward + backward) per timed step, before its one optimizer step. The
    /// default 1 is what scripts/reference_gpt.py times; a step of the seed's recipe is
    /// 8 (its batch.global_batch / batch.micro_batch), where the optimizer weighs 8 times less.
    #[arg(long, default_value_t = 1)]
    pub accum: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: i64,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 5)]
    pub warmup: i64,
    /// Time these stages on their own instead of full steps (repeatable or comma-separated):
    /// forward, head (the loss head inside forward), backward, muon, adamw, eval, stack-eval.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub part: Vec<crate::bench::Part>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Time the steps in one process, then in N processes training together (gradients
    /// all-reduced on c10d): tokens/s per process and the scaling efficiency.
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// Seconds any collective may wait (see `train --dist-timeout`).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub dist_timeout: u64,
    /// With --nproc: start the gradients' all-reduce after the last backward pass instead
    /// of bucket by bucket while it runs (to measure what the overlap gains).
    #[arg(long)]
    pub no_overlap: bool,
    /// Where rank 0 of `bench --nproc`'s processes writes its report.
    #[arg(long, value_name = "FILE", hide = true)]
    pub report_to: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArg,
}

fn config_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into())
}

pub(super) fn run_train(a: TrainArgs) -> Result<ExitCode> {
    let gpus = crate::device::slots::parse_gpu_list(&a.device.device)
        .with_context(|| format!("--device {}", a.device.device))?;
    let plan = super::dist::Plan {
        config: a.config.as_deref(),
        sets: &a.set,
        resume: a.resume.as_deref(),
        device_arg: &a.device.device,
        device: match &gpus {
            Some(g) => tch::Device::Cuda(g[0]),
            None => a.device.resolve()?,
        },
        gpus,
        dist_timeout: a.dist_timeout,
    };
    if let Some(n) = a.nproc {
        if let Some(code) = super::dist::run_nproc(&plan, n)? {
            return Ok(code);
        }
    }
    let timeout = super::dist::timeout(&plan)?;
    let launch = crate::dist::env::from_env()?;
    if let Some(l) = &launch {
        super::dist::check_launch(&plan, l)?;
    }
    let device = super::dist::this_process_device(&plan, launch.as_ref())?;
    let (config, name) = match &a.config {
        Some(c) => {
            let path = crate::config::resolve_config_path(c)?;
            (Some(TrainConfig::load(&path, &a.set)?), config_name(&path))
        }
        None => (None, String::new()),
    };
    let world = super::dist::world(launch, device, timeout)?;
    // Under `--nproc` the launcher frees the slot; elsewhere rank 0 does.
    let frees_slot =
        world.is_main() && std::env::var_os(crate::dist::env::STANDALONE_ENV).is_none();
    let opts = TrainOptions {
        config,
        name: a.name,
        config_name: name,
        resume: a.resume,
        stop_after: a.stop_after,
        device,
        runs_root: crate::paths::checkpoint_dir(),
        world: std::rc::Rc::new(world),
        overlap: !a.no_overlap,
    };
    let result = crate::train::train(&opts);
    // However it ended, its slot is free: the next queued run for its device starts.
    if frees_slot {
        crate::runs::launch::after_training(&crate::device::slots::training_label(device));
    }
    if !opts.world.is_main() {
        // The run's folder is rank 0's to print; this rank's outcome is its exit code.
        let (_, outcome) = result?;
        return Ok(match outcome {
            TrainOutcome::Failed(msg) => {
                crate::train::reporter::say(&format!("error: rank {}: {msg}", opts.world.rank));
                ExitCode::from(1)
            }
            TrainOutcome::Stopped { by_signal: true } => ExitCode::from(130),
            _ => ExitCode::SUCCESS,
        });
    }
    let (run, outcome) = result?;
    // Output that went away ends nothing: the run's own files say how it ended.
    crate::train::reporter::print(&run.display().to_string());
    Ok(match outcome {
        TrainOutcome::Done => ExitCode::SUCCESS,
        TrainOutcome::Stopped { by_signal: false } => ExitCode::SUCCESS,
        TrainOutcome::Stopped { by_signal: true } => ExitCode::from(130),
        TrainOutcome::Failed(msg) => {
            crate::train::reporter::say(&format!("error: {msg}"));
            ExitCode::from(1)
        }
    })
}

pub(super) fn run_bench(a: BenchArgs) -> Result<()> {
    let launch = crate::dist::env::from_env()?;
    let device = match &launch {
        Some(l) => super::dist::launched_device(&a.device.device, a.device.resolve()?, None, l)?,
        None => a.device.resolve()?,
    };
    let nproc = a.nproc.filter(|n| *n > 1);
    if nproc.is_some() && !a.part.is_empty() {
        anyhow::bail!("--nproc times full steps: leave out --part");
    }
    anyhow::ensure!(a.dist_timeout > 0, "--dist-timeout 0: at least one second");
    let timeout = std::time::Duration::from_secs(a.dist_timeout);
    let name = a.config.clone().unwrap_or_else(|| {
        if device.is_cuda() {
            "gpt2-small-seed"
        } else {
            "tiny"
        }
        .to_string()
    });
    let path = crate::config::resolve_config_path(&name)?;
    let config = TrainConfig::load(&path, &a.set)?;
    if let Some(b) = a.batch.filter(|b| *b > 0) {
        if let Some(why) = config.model.micro_batch_too_big(b) {
            anyhow::bail!("--batch {b}: {why}");
        }
    }
    let opts = crate::bench::BenchOptions {
        config,
        config_name: path.display().to_string(),
        batch: a.batch,
        accum: a.accum,
        steps: a.steps,
        warmup: a.warmup,
        device,
        parts: a.part,
        world: std::rc::Rc::new(super::dist::world(launch, device, timeout)?),
        overlap: !a.no_overlap,
    };
    if let Some(n) = nproc {
        return super::dist::bench_nproc(&opts, n, a.json, timeout);
    }
    if !opts.parts.is_empty() {
        let r = crate::bench::parts::run(&opts)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            crate::bench::print_parts(&r);
        }
        return Ok(());
    }
    let r = crate::bench::run(&opts)?;
    if !opts.world.is_main() {
        return Ok(());
    }
    if let Some(p) = &a.report_to {
        return crate::paths::write_atomic(p, &serde_json::to_vec(&r)?);
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        crate::bench::print(&r);
    }
    Ok(())
}
