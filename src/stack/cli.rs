//! `stacklab stack`: resolve the models, check the stack before computing anything, score
//! the stack and every part on the same tokens in one pass (parts from the cache when they
//! can), print the result, and optionally save the spec, the stack and a CSV row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;

use super::assemble::{self, PartView};
use super::cache::{DataFile, LossCache, LossKey};
use super::eval::evaluate_together;
use super::results::{BlockEntry, ModelEntry, StackReport};
use super::spec::{flags_of, parse_ranges, BlockRange, Layers, StackNorms, StackSpec};
use crate::config::{DataConfig, NormKind, TrainConfig};
use crate::data::ShardLoader;
use crate::eval::LanguageModel;
use crate::model::weights::SeedOptions;
use crate::model::Gpt;
use crate::runs::checkpoint::{self, CheckpointMeta, ValPoint};
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

#[derive(Debug, Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub sel: StackSelection,
    /// Write the stack's spec (resolved paths, sha256 of each model) to a TOML file.
    #[arg(long, value_name = "FILE")]
    pub save_spec: Option<PathBuf>,
    /// Save the stack as a checkpoint folder that eval, stack and init_from load.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Append the result as one row of a CSV file (header written when new).
    #[arg(long, value_name = "FILE.csv")]
    pub results: Option<PathBuf>,
    /// One JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Recompute every model's own loss instead of reading it from the cache.
    #[arg(long)]
    pub no_cache: bool,
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

pub fn run(a: StackArgs) -> Result<()> {
    let started = Instant::now();
    let device = a.sel.device.resolve()?;
    if let Some(dir) = &a.save {
        if dir.exists() {
            bail!(
                "--save {}: {} already exists: give a new folder to save into",
                dir.display(),
                dir.display()
            );
        }
    }
    if let Some(p) = &a.results {
        super::results::check_csv(p).context("--results")?;
    }

    let prepared = prepare(&a.sel, device)?;
    let (spec, norms, loaded, part_of, ranges, depths) = (
        &prepared.spec,
        prepared.norms,
        &prepared.loaded,
        &prepared.part_of,
        &prepared.ranges,
        &prepared.depths,
    );
    let warnings = prepared.warnings.clone();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let parts = prepared.parts();

    let (val_glob, default_tokens, data_cfg) = data_source(&a.sel.data, &loaded[part_of[0]].ckpt)?;
    let tokens = a.sel.tokens.or(default_tokens).unwrap_or(10_485_760);
    let seq_len = a.sel.seq_len.unwrap_or(parts[0].model.cfg.seq_len);
    let batch = a
        .sel
        .batch
        .unwrap_or(if device.is_cuda() { 64 } else { 16 });
    anyhow::ensure!(
        batch > 0 && seq_len > 0 && tokens > 0,
        "--batch, --seq-len and --tokens must be positive"
    );
    let mut loader = ShardLoader::from_glob(&val_glob, batch as usize, seq_len as usize)
        .with_context(|| format!("--data {val_glob}"))?;

    let resolved_spec = StackSpec {
        models: part_of
            .iter()
            .map(|&j| loaded[j].path.display().to_string())
            .collect(),
        layers: spec.layers.clone(),
        norms,
        sha256: part_of
            .iter()
            .map(|&j| Some(loaded[j].sha256.clone()))
            .collect(),
    };
    if let Some(p) = &a.save_spec {
        crate::paths::write_atomic(p, resolved_spec.to_toml_string().as_bytes())
            .with_context(|| "--save-spec")?;
    }

    // Each distinct model's own loss: from the cache, or scored in the same pass as the stack.
    let data_files = loader
        .files()
        .iter()
        .map(|f| DataFile::of(f))
        .collect::<Result<Vec<_>>>()?;
    let cache = LossCache::in_data_dir();
    let keys: Vec<LossKey> = loaded
        .iter()
        .map(|l| LossKey {
            checkpoint_sha256: l.sha256.clone(),
            data: data_files.clone(),
            tokens,
            seq_len,
            norm_wte: l.model.cfg.norm_wte,
            norm_lm_head: l.model.cfg.norm_lm_head,
            n_head: l.model.blocks.iter().map(|b| b.n_head).collect(),
            device: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
        })
        .collect();
    let mut own: Vec<Option<(f64, bool)>> = keys
        .iter()
        .map(|k| {
            if a.no_cache {
                None
            } else {
                cache.get(k).map(|(l, _)| (l, true))
            }
        })
        .collect();
    let stack = assemble::assemble(&parts, &norms, seq_len);
    let to_score: Vec<usize> = (0..loaded.len()).filter(|&j| own[j].is_none()).collect();
    let mut models: Vec<&dyn LanguageModel> = vec![&stack.model];
    models.extend(
        to_score
            .iter()
            .map(|&j| &loaded[j].model as &dyn LanguageModel),
    );
    let scores = evaluate_together(&models, &mut loader, tokens, device)?;
    for (k, &j) in to_score.iter().enumerate() {
        let loss = scores.losses[k + 1];
        own[j] = Some((loss, false));
        if let Err(e) = cache.put(&keys[j], loss, scores.tokens) {
            eprintln!("warning: cannot cache {}'s loss: {e:#}", loaded[j].label);
        }
    }
    let own: Vec<(f64, bool)> = own.into_iter().map(|o| o.expect("scored")).collect();

    let val_loss_stack = scores.losses[0];
    let val_losses: Vec<f64> = part_of.iter().map(|&j| own[j].0).collect();
    let mean = val_losses.iter().sum::<f64>() / val_losses.len() as f64;
    let best = val_losses.iter().copied().fold(f64::INFINITY, f64::min);
    let (use_first_layer, use_last_layer) = match flags_of(ranges, depths) {
        Some((f, l)) => (Some(f), Some(l)),
        None => (None, None),
    };
    let block_entries: Vec<BlockEntry> = stack
        .model
        .blocks
        .iter()
        .zip(&stack.sources)
        .map(|(b, s)| BlockEntry {
            model: s.label.clone(),
            block: s.block,
            attn_scale: b.attn_scale,
            n_head: b.n_head,
        })
        .collect();
    let model_entries: Vec<ModelEntry> = part_of
        .iter()
        .zip(ranges)
        .map(|(&j, r)| {
            let l = &loaded[j];
            let trained = l.ckpt.trained_norms();
            ModelEntry {
                label: l.label.clone(),
                name: l.ckpt.name(),
                path: l.path.display().to_string(),
                sha256: l.sha256.clone(),
                n_layer: l.model.blocks.len() as i64,
                start: r.start,
                end: r.end,
                trained_norm_wte: trained.map(|t| t.0),
                trained_norm_lm_head: trained.map(|t| t.1),
                norm_wte: l.model.cfg.norm_wte,
                norm_lm_head: l.model.cfg.norm_lm_head,
                val_loss: own[j].0,
                cached: own[j].1,
            }
        })
        .collect();

    let saved = match &a.save {
        Some(dir) => Some(save_stack(
            dir,
            &stack,
            &loaded[part_of[0]].ckpt,
            data_cfg,
            tokens,
            val_loss_stack,
            device,
        )?),
        None => None,
    };

    let report = StackReport {
        val_loss_stack,
        val_losses,
        mean_val_loss: mean,
        delta_vs_best: val_loss_stack - best,
        use_first_layer,
        use_last_layer,
        norm_wte: norms.norm_wte,
        norm_lm_head: norms.norm_lm_head,
        norm_inter_model: norms.norm_inter_model,
        unique_model: loaded.len() > 1,
        block_list: assemble::block_list(&parts),
        blocks: block_entries,
        models: model_entries,
        data: val_glob,
        tokens: scores.tokens,
        seq_len,
        batch,
        device: crate::device::name(device),
        warnings,
        saved: saved.map(|p| p.display().to_string()),
        seconds: started.elapsed().as_secs_f64(),
        created_at: chrono::Utc::now().to_rfc3339(),
    };
    if let Some(p) = &a.results {
        report.append_csv(p).context("--results")?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Writes the stack as a checkpoint folder: seed-named weights, every block's scale, heads,
/// boundary norm and source in `meta.toml`, and a config whose data section is the data the
/// stack was scored on (so `eval` finds it by default).
fn save_stack(
    dir: &Path,
    stack: &assemble::Stack,
    first: &CheckpointRef,
    data: DataConfig,
    tokens: i64,
    val_loss: f64,
    device: Device,
) -> Result<PathBuf> {
    let (mut cfg, seed) = match first {
        CheckpointRef::Native(c) => (
            TrainConfig::from_toml_str(
                &c.config_toml()?,
                &c.path.join(checkpoint::CONFIG_FILE).display().to_string(),
                &[],
            )?,
            c.meta.seed,
        ),
        CheckpointRef::SeedFile(_) => (TrainConfig::default(), 0),
    };
    cfg.model = stack.model.cfg.clone();
    cfg.data = data;
    cfg.eval.val_tokens = tokens;
    cfg.from_model = String::new();
    cfg.init_from = String::new();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stack".into());
    let meta = CheckpointMeta {
        name,
        step: 0,
        total_steps: 0,
        tokens_seen: 0,
        seed,
        train_time_s: 0.0,
        device: crate::device::name(device),
        stacklab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("STACKLAB_GIT_COMMIT").into(),
        created_at: chrono::Utc::now().to_rfc3339(),
        wte_sha256: crate::model::weights::wte_hash(&stack.model.wte),
        wte_frozen: false,
        val_tokens: tokens,
        model: stack.model.cfg.clone(),
        train_data: Default::default(),
        data_position: None,
        adamw_step: 0,
        from_model: None,
        val_loss_history: vec![ValPoint { step: 0, val_loss }],
        init_from: None,
        blocks: stack.layout(),
    };
    checkpoint::write_weights_checkpoint(dir, &stack.model, &meta, &cfg.to_toml_string())
        .context("--save")
}
