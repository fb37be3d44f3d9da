//! Which stack, and the data it is scored on, as `stack` and `inspect` share it: the
//! selection arguments, the spec they describe, the default data, and the prepared stack.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;

use super::assemble::{self, PartView};
use super::spec::{parse_ranges, BlockRange, Layers, StackNorms, StackSpec};
use crate::config::{DataConfig, NormKind, TrainConfig};
use crate::model::weights::SeedOptions;
use crate::model::Gpt;
use crate::runs::checkpoint;
use crate::runs::CheckpointRef;

#[derive(Debug, Args)]
/// Which stack, and the data it is scored on: what `stack` and `inspect` share.
pub struct StackSelection {
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
    pub device: crate::cli::DeviceArg,
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
pub fn spec_from_args(a: &StackSelection) -> Result<StackSpec> {
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

/// A distinct model of the stack (by the SHA-256 of its weights file), loaded once.
pub struct Loaded {
    pub label: String,
    pub ckpt: CheckpointRef,
    pub path: PathBuf,
    pub sha256: String,
    pub model: Gpt,
}

fn resolved_path(c: &CheckpointRef) -> PathBuf {
    let p = match c {
        CheckpointRef::Native(n) => n.path.clone(),
        CheckpointRef::SeedFile(f) => f.clone(),
    };
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// Val shards and default token count: `--data`, else what the first model trained on,
/// with the data section a saved stack's config should carry.
pub fn data_source(
    arg: &Option<String>,
    first: &CheckpointRef,
) -> Result<(String, Option<i64>, DataConfig)> {
    match (arg, first) {
        (Some(d), _) if d == "embedded" => Ok((
            crate::data::embedded::ensure_prepared()?.val_glob(),
            None,
            DataConfig {
                embedded: true,
                ..DataConfig::default()
            },
        )),
        (Some(d), _) => Ok((
            d.clone(),
            None,
            DataConfig {
                embedded: false,
                train: d.clone(),
                val: d.clone(),
                ..DataConfig::default()
            },
        )),
        (None, CheckpointRef::Native(c)) => {
            let cfg = TrainConfig::from_toml_str(
                &c.config_toml()?,
                &c.path.join(checkpoint::CONFIG_FILE).display().to_string(),
                &[],
            )?;
            Ok((
                crate::data::DataSource::from_config(&cfg.data)?.val,
                Some(cfg.eval.val_tokens),
                cfg.data,
            ))
        }
        (None, CheckpointRef::SeedFile(p)) => bail!(
            "{}: a seed-format file does not say which data it was trained on; give --data GLOB",
            p.display()
        ),
    }
}

/// A stack resolved and checked, its models loaded (each distinct one once), before any
/// pass over the data: what `stack` scores and `inspect` inspects.
pub struct Prepared {
    pub spec: StackSpec,
    pub norms: StackNorms,
    pub loaded: Vec<Loaded>,
    /// For each part, its model's index in `loaded`.
    pub part_of: Vec<usize>,
    pub ranges: Vec<BlockRange>,
    pub depths: Vec<i64>,
    pub names: Vec<String>,
    pub warnings: Vec<String>,
}

impl Prepared {
    pub fn parts(&self) -> Vec<PartView<'_>> {
        self.part_of
            .iter()
            .zip(&self.ranges)
            .map(|(&j, &range)| PartView {
                label: &self.loaded[j].label,
                name: &self.names[j],
                model: &self.loaded[j].model,
                range,
                trained_norms: self.loaded[j].ckpt.trained_norms(),
            })
            .collect()
    }

    /// The first part's checkpoint (its data is the default data).
    pub fn first(&self) -> &CheckpointRef {
        &self.loaded[self.part_of[0]].ckpt
    }
}

/// Resolves, loads and checks the stack a command line describes; refuses what cannot be
/// stacked before anything is computed.
pub fn prepare(a: &StackSelection, device: Device) -> Result<Prepared> {
    let spec = spec_from_args(a)?;
    let norms = spec.norms;
    // Resolve every model, hash its weights, load each distinct one once.
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut part_of: Vec<usize> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut hashes: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (i, m) in spec.models.iter().enumerate() {
        let ckpt = CheckpointRef::resolve(m)?;
        let path = resolved_path(&ckpt);
        let sha = match hashes.get(&path) {
            Some(h) => h.clone(),
            None => {
                let h = ckpt.sha256()?;
                hashes.insert(path.clone(), h.clone());
                h
            }
        };
        let idx = match loaded.iter().position(|l| l.sha256 == sha) {
            Some(j) => j,
            None => {
                let opts = match &ckpt {
                    // Own losses: a checkpoint with the norms it was trained with, a seed
                    // file with the norms given (none / rms_norm unless said), as eval does.
                    CheckpointRef::Native(_) => SeedOptions::default(),
                    CheckpointRef::SeedFile(_) => SeedOptions {
                        n_head: a.n_head,
                        norm_wte: Some(norms.norm_wte),
                        norm_lm_head: Some(norms.norm_lm_head),
                        seq_len: None,
                    },
                };
                let model = ckpt
                    .load_model(&opts, device)
                    .with_context(|| format!("cannot load `{m}`"))?;
                loaded.push(Loaded {
                    label: format!("m{}", loaded.len() + 1),
                    ckpt,
                    path,
                    sha256: sha.clone(),
                    model,
                });
                loaded.len() - 1
            }
        };
        if let Some(Some(recorded)) = spec.sha256.get(i) {
            if *recorded != sha {
                warnings.push(format!(
                    "{} (`{}`) is not the file the spec recorded: sha256 {} in the spec, {} now",
                    loaded[idx].label,
                    loaded[idx].ckpt.name(),
                    recorded,
                    sha
                ));
            }
        }
        part_of.push(idx);
    }

    // The checks, before anything is computed.
    let depths: Vec<i64> = part_of
        .iter()
        .map(|&j| loaded[j].model.blocks.len() as i64)
        .collect();
    let ranges = spec.layers.ranges(&depths);
    let names: Vec<String> = loaded.iter().map(|l| l.ckpt.name()).collect();
    let parts: Vec<PartView> = part_of
        .iter()
        .zip(&ranges)
        .map(|(&j, &range)| PartView {
            label: &loaded[j].label,
            name: &names[j],
            model: &loaded[j].model,
            range,
            trained_norms: loaded[j].ckpt.trained_norms(),
        })
        .collect();
    assemble::check(&parts, matches!(spec.layers, Layers::Flags { .. }))?;
    warnings.extend(assemble::warnings(&parts, &norms));
    drop(parts);

    Ok(Prepared {
        spec,
        norms,
        loaded,
        part_of,
        ranges,
        depths,
        names,
        warnings,
    })
}
