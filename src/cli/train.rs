//! `train` and `bench`: the commands that run training steps from a config.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
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
    #[command(flatten)]
    pub device: DeviceArg,
}

fn config_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into())
}

pub(super) fn run_train(a: TrainArgs) -> Result<ExitCode> {
    let device = a.device.resolve()?;
    let (config, name) = match &a.config {
        Some(c) => {
            let path = crate::config::resolve_config_path(c)?;
            (Some(TrainConfig::load(&path, &a.set)?), config_name(&path))
        }
        None => (None, String::new()),
    };
    let opts = TrainOptions {
        config,
        name: a.name,
        config_name: name,
        resume: a.resume,
        stop_after: a.stop_after,
        device,
        runs_root: crate::paths::checkpoint_dir(),
    };
    let result = crate::train::train(&opts);
    // However it ended, its slot is free: the next queued run for its device starts.
    crate::runs::launch::after_training(&crate::device::name(device));
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
    let device = a.device.resolve()?;
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
    };
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
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        crate::bench::print(&r);
    }
    Ok(())
}
