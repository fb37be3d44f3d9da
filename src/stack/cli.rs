//! `stacklab stack`: resolve the models, check the stack before computing anything, score
//! the stack and every part on the same tokens in one pass (parts from the cache when they
//! can), print the result, and optionally save the spec, the stack and a CSV row. Resolving
//! and checking the stack live in `selection`, which `inspect` shares.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use tch::Device;

use super::assemble;
use super::cache::{DataFile, LossCache, LossKey};
use super::eval::evaluate_together;
use super::results::{BlockEntry, ModelEntry, StackReport};
use super::spec::{flags_of, StackSpec};
use crate::config::{DataConfig, TrainConfig};
use crate::data::ShardLoader;
use crate::eval::LanguageModel;
use crate::runs::checkpoint::{self, CheckpointMeta, ValPoint};
use crate::runs::CheckpointRef;

pub use super::selection::{
    data_source, prepare, spec_from_args, Loaded, Prepared, StackSelection,
};

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

    let (val_glob, default_tokens, data_cfg) = data_source(&a.sel, &loaded[part_of[0]].ckpt)?;
    if a.save.is_some() && data_cfg.is_none() {
        bail!(
            "--save: a saved stack records its models' training data, and `{}` (a seed-format file) does not say which it was: give --train-data GLOB",
            loaded[part_of[0]].ckpt.name()
        );
    }
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
            model_id: l.id.clone(),
            data: data_files.clone(),
            tokens,
            seq_len,
            batch,
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
            let trained = l.trained_norms;
            ModelEntry {
                label: l.label.clone(),
                name: l.ckpt.name(),
                path: l.path.display().to_string(),
                sha256: l.sha256.clone(),
                model_id: l.id.clone(),
                trained_norms_from: l.trained_norms_from.map(str::to_string),
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
            data_cfg.expect("checked before scoring"),
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
/// boundary norm and source in `meta.toml`, and a config whose data section is its models'
/// training shards and the val shards the stack was scored on (so `eval` finds them by
/// default and `inspect` never fits a stitch on the probe).
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
