//! The command line: no subcommand opens the lab; the subcommands run the same work headless.
//! Every command's flags and printing live under `cli/`, one file per command family
//! (`stack.rs`, `inspect.rs`, `sweep.rs`, `train.rs`: train and bench, `checkpoint.rs`: eval
//! and export; `selection.rs`: the flags stack and inspect share); the work they start is
//! library code below. This file holds the parser and the dispatch.

mod checkpoint;
mod dist;
pub mod heal;
pub mod inspect;
pub mod runs;
pub mod selection;
pub mod stack;
pub mod sweep;
mod train;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use self::checkpoint::{run_eval, run_export};
use self::train::{run_bench, run_train};
use crate::data::command::DataCommand;

pub use checkpoint::{EvalArgs, ExportArgs};
pub use selection::StackSelectionArgs;
pub use train::{BenchArgs, TrainArgs};

#[derive(Debug, Parser)]
#[command(
    name = "stacklab",
    version,
    about = "A terminal lab for model-stacking research"
)]
pub struct Cli {
    /// The lab's device for the trainings it starts: auto (CUDA when available), cpu, cuda
    /// or cuda:N. The subcommands that compute take their own (`stacklab train --device cpu`).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// The lab's theme: default, light, high-contrast, a user theme's name, or a .toml file.
    #[arg(long, value_name = "NAME|FILE")]
    pub theme: Option<String>,
    /// Draw the lab in ASCII only: borders, charts, gauges (for terminals without Unicode).
    #[arg(long)]
    pub ascii: bool,
    /// Let the lab take mouse input (off: the terminal's own selection works).
    #[arg(long)]
    pub mouse: bool,
    /// What the lab writes to its log file in the data dir: error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model headless into a run directory (config, metrics, status, checkpoints).
    Train(TrainArgs),
    /// Validation loss of a checkpoint on the first N tokens of val shards.
    Eval(EvalArgs),
    /// Stack checkpoints (one model's blocks under another's) and score the stack beside its parts.
    Stack(stack::StackArgs),
    /// Time full training steps on synthetic tokens: step time, tokens/s, TFLOP/s, MFU, memory.
    Bench(BenchArgs),
    /// Write a checkpoint as one .safetensors file that loads strictly into the seed's PyTorch GPT.
    Export(ExportArgs),
    /// Token data: prepare shards from text, download FineWeb shards, inspect shards, the embedded corpus.
    #[command(subcommand)]
    Data(DataCommand),
    /// The seed's whole experiment from a sweep config: train what is missing, evaluate the
    /// stack grid, write results.csv and tables.md (resumable).
    Sweep(sweep::SweepArgs),
    /// Does a stack heal? Train it, the first part on itself, a fresh model of its size and
    /// the better part for the same steps on the same tokens, and compare the curves.
    Heal(heal::HealArgs),
    /// Why a stack fails at its seam: residual norms, logit lens, CKA and stitching, for the
    /// stack and each part alone on the same tokens (takes stack's flags).
    Inspect(inspect::InspectArgs),
    /// Every run in the checkpoint dir: state, step, losses, tokens/s, age, size on disk.
    Runs(runs::RunsArgs),
    /// Stop a run gracefully (SIGTERM: it checkpoints, then ends stopped), or --kill it.
    Stop(runs::StopArgs),
    /// Remove a run that is neither running nor queued, with all its checkpoints.
    Rm(runs::RmArgs),
    /// Apply checkpoint retention to existing runs and report the space freed.
    Gc(runs::GcArgs),
    /// What this installation sees: versions, libtorch, devices, folders.
    Doctor {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `--device` of the commands that compute on one.
#[derive(Debug, Clone, Args)]
pub struct DeviceArg {
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl DeviceArg {
    pub fn resolve(&self) -> Result<tch::Device> {
        crate::device::parse_device(&self.device)
            .with_context(|| format!("--device {}", self.device))
    }
}

impl Cli {
    /// Whether the command may call libtorch, so its CUDA library must be loaded first.
    /// `data` never does: it skips the load, and the memory it takes (about 250 MB of
    /// libraries and their teardown at exit).
    pub fn needs_libtorch(&self) -> bool {
        !matches!(self.command, Some(Command::Data(_)))
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    if let (Some(d), Some(_)) = (&cli.device, &cli.command) {
        bail!(
            "--device {d} before the subcommand is the lab's: give it after the subcommand (e.g. `stacklab train --device {d}`); train, eval, bench, stack, inspect and sweep take one"
        );
    }
    match cli.command {
        None => crate::tui::run(crate::tui::LabOptions {
            device: cli.device.unwrap_or_else(|| "auto".into()),
            theme: cli.theme,
            ascii: cli.ascii,
            mouse: cli.mouse,
            log_level: cli.log_level,
        })
        .map(|_| ExitCode::SUCCESS),
        Some(Command::Doctor { json }) => crate::doctor::run(json).map(|_| ExitCode::SUCCESS),
        Some(Command::Data(cmd)) => crate::data::command::run(cmd).map(|_| ExitCode::SUCCESS),
        Some(Command::Train(a)) => run_train(a),
        Some(Command::Eval(a)) => run_eval(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Bench(a)) => run_bench(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Export(a)) => run_export(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Sweep(a)) => sweep::run(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Stack(a)) => stack::run(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Inspect(a)) => inspect::run(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Heal(a)) => heal::run(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Runs(a)) => runs::run_runs(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Stop(a)) => runs::run_stop(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Rm(a)) => runs::run_rm(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Gc(a)) => runs::run_gc(a).map(|_| ExitCode::SUCCESS),
    }
}
