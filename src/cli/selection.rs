//! The selection flags `stack` and `inspect` share: which stack (`--models` with flags or
//! `--ranges`, or `--spec FILE`), its norms, and how it is scored; turned into the typed
//! [`StackSpec`] and [`EvalOptions`] the library takes.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::config::NormKind;
use crate::stack::spec::parse_ranges;
use crate::stack::{EvalOptions, Layers, StackNorms, StackSpec};

#[derive(Debug, Args)]
/// Which stack, and the data it is scored on: what `stack` and `inspect` share.
pub struct StackSelectionArgs {
    /// The models, bottom first: checkpoint folders, run folders, names, or seed-named
    /// .safetensors files; the same model may repeat.
    #[arg(long, num_args = 1.., value_name = "MODEL")]
    pub models: Vec<String>,
    /// Keep the first block of every part after the first (the seed's flag).
    #[arg(long)]
    pub use_first_layer: bool,
    /// Keep the last block of every part before the last (the seed's flag).
    #[arg(long)]
    pub use_last_layer: bool,
    /// One half-open block range start:end per model, e.g. "0:11,1:12" (replaces the two flags).
    #[arg(long, value_name = "START:END,...")]
    pub ranges: Option<String>,
    /// Norm on the embeddings: none, rms_norm, layer_norm (default none).
    #[arg(long)]
    pub norm_wte: Option<String>,
    /// Norm before the head: none, rms_norm, layer_norm (default rms_norm).
    #[arg(long)]
    pub norm_lm_head: Option<String>,
    /// Norm before every part after the first: none, rms_norm, layer_norm (default none).
    #[arg(long)]
    pub norm_inter_model: Option<String>,
    /// Val shard glob, or `embedded`; default: the data the first model was trained on.
    #[arg(long)]
    pub data: Option<String>,
    /// Train shards (what `inspect` fits its stitches on, and what a saved stack records
    /// as its training data); default: the first model's training data.
    #[arg(long, value_name = "GLOB")]
    pub train_data: Option<String>,
    /// The norms seed-format files were trained with, NORM_WTE/NORM_LM_HEAD (e.g.
    /// none/rms_norm), for files whose metadata does not say; their own losses use them.
    #[arg(long, value_name = "WTE/HEAD")]
    pub part_norms: Option<String>,
    /// Tokens to score; default: the first model's eval.val_tokens (seed files: 10,485,760).
    #[arg(long)]
    pub tokens: Option<i64>,
    /// Sequence length; default: the first model's.
    #[arg(long)]
    pub seq_len: Option<i64>,
    /// Sequences per forward pass; default 64 on CUDA, 16 on the CPU.
    #[arg(long)]
    pub batch: Option<i64>,
    /// Heads of seed-named files (default width / 64).
    #[arg(long)]
    pub n_head: Option<i64>,
    #[command(flatten)]
    pub device: super::DeviceArg,
    /// Read the stack (models, ranges or flags, norms) from a TOML file; norms given here override it.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
}

fn parse_norm(flag: &str, v: &Option<String>) -> Result<Option<NormKind>> {
    v.as_deref()
        .map(|s| s.parse::<NormKind>().with_context(|| format!("--{flag}")))
        .transpose()
}

/// The spec the command line describes: a spec file, or `--models` with flags or ranges.
fn spec_from_args(a: &StackSelectionArgs) -> Result<StackSpec> {
    let wte = parse_norm("norm-wte", &a.norm_wte)?;
    let head = parse_norm("norm-lm-head", &a.norm_lm_head)?;
    let inter = parse_norm("norm-inter-model", &a.norm_inter_model)?;
    let mut spec = match &a.spec {
        Some(path) => {
            if !a.models.is_empty() || a.ranges.is_some() || a.use_first_layer || a.use_last_layer {
                bail!(
                    "--spec {} gives the models and their blocks; leave out --models, --ranges, --use-first-layer and --use-last-layer (norms given on the command line override the spec's)",
                    path.display()
                );
            }
            StackSpec::load(path)?
        }
        None => {
            if a.models.is_empty() {
                bail!("give the models to stack with --models A B [C...], or a spec file with --spec FILE");
            }
            let layers = match &a.ranges {
                Some(r) => {
                    if a.use_first_layer || a.use_last_layer {
                        bail!("--ranges replace --use-first-layer and --use-last-layer: give explicit ranges or the flags, not both");
                    }
                    Layers::Ranges(parse_ranges(r).context("--ranges")?)
                }
                None => Layers::Flags {
                    use_first_layer: a.use_first_layer,
                    use_last_layer: a.use_last_layer,
                },
            };
            StackSpec {
                models: a.models.clone(),
                layers,
                norms: StackNorms::default(),
                sha256: vec![None; a.models.len()],
            }
        }
    };
    if let Some(n) = wte {
        spec.norms.norm_wte = n;
    }
    if let Some(n) = head {
        spec.norms.norm_lm_head = n;
    }
    if let Some(n) = inter {
        spec.norms.norm_inter_model = n;
    }
    spec.check_shape()?;
    Ok(spec)
}

/// `none/rms_norm` (or `none,rms_norm`) as the two norms a model was trained with.
fn parse_part_norms(v: &str) -> Result<(NormKind, NormKind)> {
    let parts: Vec<&str> = v.split(['/', ',']).map(str::trim).collect();
    if parts.len() != 2 {
        bail!("--part-norms {v}: expected NORM_WTE/NORM_LM_HEAD, e.g. none/rms_norm");
    }
    let norm = |s: &str| {
        s.parse::<NormKind>()
            .with_context(|| format!("--part-norms {v}"))
    };
    Ok((norm(parts[0])?, norm(parts[1])?))
}

impl StackSelectionArgs {
    /// The stack these flags describe.
    pub fn spec(&self) -> Result<StackSpec> {
        spec_from_args(self)
    }

    /// How these flags say to score it.
    pub fn eval(&self) -> Result<EvalOptions> {
        Ok(EvalOptions {
            data: self.data.clone(),
            train_data: self.train_data.clone(),
            part_norms: self
                .part_norms
                .as_deref()
                .map(parse_part_norms)
                .transpose()?,
            tokens: self.tokens,
            seq_len: self.seq_len,
            batch: self.batch,
            n_head: self.n_head,
        })
    }
}
