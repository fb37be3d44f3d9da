//! The command line: no subcommand opens the lab; the subcommands run the same work headless.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{NormKind, TrainConfig};
use crate::data::command::DataCommand;
use crate::data::ShardLoader;
use crate::model::weights::SeedOptions;
use crate::runs::CheckpointRef;
use crate::train::{TrainOptions, TrainOutcome};

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
    Stack(crate::stack::cli::StackArgs),
    /// Time full training steps on synthetic tokens: step time, tokens/s, TFLOP/s, MFU, memory.
    Bench(BenchArgs),
    /// Write a checkpoint as one .safetensors file that loads strictly into the seed's PyTorch GPT.
    Export(ExportArgs),
    /// Token data: prepare shards from text, download FineWeb shards, inspect shards, the embedded corpus.
    #[command(subcommand)]
    Data(DataCommand),
    /// The seed's whole experiment from a sweep config: train what is missing, evaluate the
    /// stack grid, write results.csv and tables.md (resumable).
    Sweep(crate::sweep::cli::SweepArgs),
    /// Why a stack fails at its seam: residual norms, logit lens, CKA and stitching, for the
    /// stack and each part alone on the same tokens (takes stack's flags).
    Inspect(crate::inspect::cli::InspectArgs),
    /// Every run in the checkpoint dir: state, step, losses, tokens/s, age, size on disk.
    Runs(crate::runs::cli::RunsArgs),
    /// Stop a run gracefully (SIGTERM: it checkpoints, then ends stopped), or --kill it.
    Stop(crate::runs::cli::StopArgs),
    /// Remove a run that is neither running nor queued, with all its checkpoints.
    Rm(crate::runs::cli::RmArgs),
    /// Apply checkpoint retention to existing runs and report the space freed.
    Gc(crate::runs::cli::GcArgs),
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
pub struct EvalArgs {
    /// A checkpoint folder, a run folder (its latest checkpoint), or a seed-format .safetensors file.
    #[arg(long)]
    pub checkpoint: String,
    /// Val shard glob, or `embedded`; default: the data the checkpoint was trained on.
    #[arg(long)]
    pub data: Option<String>,
    /// Tokens to score from the start of the val shards; default: the run's eval.val_tokens (seed files: 10,485,760).
    #[arg(long)]
    pub tokens: Option<i64>,
    /// Sequence length; default: the checkpoint's (seed files: 1024).
    #[arg(long)]
    pub seq_len: Option<i64>,
    /// Sequences per forward pass; default 64 on CUDA, 16 on the CPU.
    #[arg(long)]
    pub batch: Option<i64>,
    /// Heads of a seed-format file (default width / 64).
    #[arg(long)]
    pub n_head: Option<i64>,
    /// Embedding norm: none, rms_norm, layer_norm (seed files default to none).
    #[arg(long)]
    pub norm_wte: Option<String>,
    /// lm-head input norm: none, rms_norm, layer_norm (seed files default to rms_norm).
    #[arg(long)]
    pub norm_lm_head: Option<String>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
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
    /// default 1 is what ../shared/gpu/reference_gpt.py times; a step of the seed's recipe is
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
    /// forward, backward, muon, adamw, eval, stack-eval.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub part: Vec<crate::bench::Part>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint folder, a run folder (its latest checkpoint), or a seed-format .safetensors file.
    #[arg(long)]
    pub checkpoint: String,
    /// The .safetensors file to write (written to a temporary file, then renamed).
    #[arg(long)]
    pub out: PathBuf,
    /// Prefix every name, e.g. `_orig_mod.` for the state dict of a torch.compile'd model.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Replace an existing file at --out.
    #[arg(long)]
    pub force: bool,
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
        Some(Command::Sweep(a)) => crate::sweep::cli::run(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Stack(a)) => crate::stack::cli::run(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Inspect(a)) => crate::inspect::cli::run(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Runs(a)) => crate::runs::cli::run_runs(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Stop(a)) => crate::runs::cli::run_stop(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Rm(a)) => crate::runs::cli::run_rm(a).map(|_| ExitCode::SUCCESS),
        Some(Command::Gc(a)) => crate::runs::cli::run_gc(a).map(|_| ExitCode::SUCCESS),
    }
}

fn config_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into())
}

fn run_train(a: TrainArgs) -> Result<ExitCode> {
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
    println!("{}", run.display());
    Ok(match outcome {
        TrainOutcome::Done => ExitCode::SUCCESS,
        TrainOutcome::Stopped { by_signal: false } => ExitCode::SUCCESS,
        TrainOutcome::Stopped { by_signal: true } => ExitCode::from(130),
        TrainOutcome::Failed(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    })
}

fn parse_norm(flag: &str, v: &Option<String>) -> Result<Option<NormKind>> {
    v.as_deref()
        .map(|s| s.parse::<NormKind>().with_context(|| format!("--{flag}")))
        .transpose()
}

fn positive_flag(flag: &str, v: Option<i64>) -> Result<()> {
    if let Some(v) = v {
        if v < 1 {
            bail!("--{flag} {v}: must be at least 1");
        }
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<()> {
    let device = a.device.resolve()?;
    for (flag, v) in [
        ("tokens", a.tokens),
        ("seq-len", a.seq_len),
        ("batch", a.batch),
        ("n-head", a.n_head),
    ] {
        positive_flag(flag, v)?;
    }
    let ckpt = CheckpointRef::resolve(&a.checkpoint).context("--checkpoint")?;
    if let (CheckpointRef::Native(c), Some(h)) = (&ckpt, a.n_head) {
        if h != c.meta.model.n_head {
            anyhow::bail!(
                "--n-head {h}: {} records n_head = {}; --n-head is for seed-format .safetensors files",
                c.meta.name,
                c.meta.model.n_head
            );
        }
    }
    let opts = SeedOptions {
        n_head: a.n_head,
        norm_wte: parse_norm("norm-wte", &a.norm_wte)?,
        norm_lm_head: parse_norm("norm-lm-head", &a.norm_lm_head)?,
        seq_len: a.seq_len,
    };
    if let (Some((wte, head)), true) = (
        ckpt.trained_norms(),
        opts.norm_wte.is_some() || opts.norm_lm_head.is_some(),
    ) {
        let (w2, h2) = (
            opts.norm_wte.unwrap_or(wte),
            opts.norm_lm_head.unwrap_or(head),
        );
        if (w2, h2) != (wte, head) {
            eprintln!(
                "warning: {} was trained with norm_wte = {wte}, norm_lm_head = {head}; evaluating with norm_wte = {w2}, norm_lm_head = {h2}",
                ckpt.name()
            );
        }
    }
    let model = ckpt.load_model(&opts, device)?;
    let (val_glob, default_tokens) = match (&a.data, &ckpt) {
        (Some(d), _) if d == "embedded" => {
            (crate::data::embedded::ensure_prepared()?.val_glob(), None)
        }
        (Some(d), _) => (d.clone(), None),
        (None, CheckpointRef::Native(c)) => {
            let cfg = TrainConfig::from_toml_str(
                &c.config_toml()?,
                &c.path.join("config.toml").display().to_string(),
                &[],
            )?;
            (
                crate::data::DataSource::from_config(&cfg.data)?.val,
                Some(cfg.eval.val_tokens),
            )
        }
        (None, CheckpointRef::SeedFile(p)) => anyhow::bail!(
            "{}: a seed-format file does not say which data it was trained on; give --data GLOB",
            p.display()
        ),
    };
    let tokens = a.tokens.or(default_tokens).unwrap_or(10_485_760);
    let seq_len = model.cfg.seq_len;
    let tokens_flag = match a.tokens {
        Some(t) => format!("--tokens {t}"),
        None => format!("--tokens (default {tokens})"),
    };
    let (batch, mut loader) =
        eval_loader(&val_glob, tokens, &tokens_flag, seq_len, a.batch, device)?;
    let r = crate::eval::evaluate(&model, &mut loader, tokens, device)?;
    if a.json {
        let out = serde_json::json!({
            "val_loss": r.val_loss,
            "tokens": r.tokens,
            "seq_len": seq_len,
            "checkpoint": ckpt.name(),
            "data": val_glob,
            "batch": batch,
            "device": crate::device::name(device),
            "norm_wte": model.cfg.norm_wte,
            "norm_lm_head": model.cfg.norm_lm_head,
            "seconds": r.seconds,
            "tokens_per_s": r.tokens as f64 / r.seconds,
        });
        println!("{out}");
    } else {
        println!(
            "val_loss {:.6} over {} tokens (seq_len {seq_len}) of {} on {} [{:.1}s]",
            r.val_loss,
            r.tokens,
            ckpt.name(),
            crate::device::name(device),
            r.seconds
        );
    }
    Ok(())
}

/// The val loader for `eval`: the batch clamped to the sequences asked for and to what every
/// shard holds (a smaller default, or an error that says which `--batch` works), and the
/// tokens checked against what the shards hold.
fn eval_loader(
    glob: &str,
    tokens: i64,
    tokens_flag: &str,
    seq_len: i64,
    batch: Option<i64>,
    device: tch::Device,
) -> Result<(i64, ShardLoader)> {
    let sequences = tokens / seq_len;
    if sequences < 1 {
        bail!("{tokens_flag}: less than one sequence of {seq_len} tokens (--seq-len)");
    }
    let files = crate::data::expand_glob(glob).with_context(|| format!("--data {glob}"))?;
    let mut smallest: Option<(usize, &std::path::PathBuf)> = None;
    for f in &files {
        let n = crate::data::shard::read_header(f).with_context(|| format!("--data {glob}"))?;
        if smallest.is_none_or(|(m, _)| n < m) {
            smallest = Some((n, f));
        }
    }
    let (least, least_file) = smallest.expect("expand_glob returns at least one file");
    let fits = (least.saturating_sub(1) / seq_len as usize) as i64;
    if fits < 1 {
        bail!(
            "--data {glob}: shard {} holds {least} tokens, fewer than one sequence of {seq_len} + 1 (--seq-len)",
            least_file.display()
        );
    }
    let batch = match batch {
        Some(b) if b.min(sequences) > fits => bail!(
            "--batch {b}: shard {} holds {least} tokens, fewer than one batch of {b} x {seq_len} + 1; --batch {fits} or less fits",
            least_file.display()
        ),
        Some(b) => b.min(sequences),
        None => (if device.is_cuda() { 64 } else { 16 }).min(sequences).min(fits),
    };
    let loader = ShardLoader::new(files, batch as usize, seq_len as usize)
        .with_context(|| format!("--data {glob}"))?;
    if !loader.fits_from_start(sequences as usize) {
        bail!(
            "{tokens_flag}: the val shards ({glob}) hold at most {} tokens in {seq_len}-token sequences read {batch} at a time",
            loader.max_sequences_from_start() as i64 * seq_len
        );
    }
    Ok((batch, loader))
}

fn run_export(a: ExportArgs) -> Result<()> {
    if !a.prefix.is_empty() && !a.prefix.ends_with('.') {
        bail!(
            "--prefix {}: a prefix of state-dict names ends with '.', e.g. _orig_mod.",
            a.prefix
        );
    }
    let ckpt = CheckpointRef::resolve(&a.checkpoint).context("--checkpoint")?;
    let s = crate::export::export(
        &ckpt,
        &SeedOptions::default(),
        &a.out,
        &crate::export::ExportOptions {
            prefix: a.prefix,
            force: a.force,
        },
    )?;
    println!(
        "{}  {} tensors, {:.1} MB from {}: the seed's names, for load_state_dict(strict=True) into its GPT",
        s.path.display(),
        s.tensors,
        s.bytes as f64 / 1e6,
        ckpt.name()
    );
    Ok(())
}

fn run_bench(a: BenchArgs) -> Result<()> {
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
