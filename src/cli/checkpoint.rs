//! `eval` and `export`: the commands that read one checkpoint (`--checkpoint`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::DeviceArg;
use crate::config::{NormKind, TrainConfig};
use crate::data::ShardLoader;
use crate::model::weights::SeedOptions;
use crate::runs::CheckpointRef;

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

/// The model as `eval` scores it: the norms given on the command line (warning when they
/// are not the ones it was trained with), `--n-head` only for seed-format files.
fn load_for_eval(
    a: &EvalArgs,
    ckpt: &CheckpointRef,
    device: tch::Device,
) -> Result<crate::model::Gpt> {
    if let (CheckpointRef::Native(c), Some(h)) = (ckpt, a.n_head) {
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
    match a.seq_len {
        Some(t) => ckpt
            .load_model(&opts, device)
            .with_context(|| format!("--seq-len {t}")),
        None => ckpt.load_model(&opts, device),
    }
}

/// The val shards to score and their default token count: `--data` (or `embedded`), else
/// what the checkpoint was trained on.
fn val_data(data: Option<&str>, ckpt: &CheckpointRef) -> Result<(String, Option<i64>)> {
    Ok(match (data, ckpt) {
        (Some("embedded"), _) => (crate::data::embedded::ensure_prepared()?.val_glob(), None),
        (Some(d), _) => (d.to_string(), None),
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
    })
}

pub(super) fn run_eval(a: EvalArgs) -> Result<()> {
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
    let model = load_for_eval(&a, &ckpt, device)?;
    let (val_glob, default_tokens) = val_data(a.data.as_deref(), &ckpt)?;
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

pub(super) fn run_export(a: ExportArgs) -> Result<()> {
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
