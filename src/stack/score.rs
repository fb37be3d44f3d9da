//! Scoring a prepared stack: the stack and every distinct part on the same tokens in one
//! pass (parts' own losses from the cache when they can be), the report, and saving the
//! stack as a checkpoint folder. What `stack` computes, as a library function: the command
//! only parses flags, prints and appends the row.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::Device;

use super::assemble;
use super::cache::{DataFile, LossCache, LossKey};
use super::results::{BlockEntry, ModelEntry, StackReport};
use super::selection::{data_source, EvalOptions, Prepared};
use super::spec::flags_of;
use crate::config::{DataConfig, TrainConfig};
use crate::data::ShardLoader;
use crate::eval::{evaluate_many, LanguageModel};
use crate::progress::Sink;
use crate::runs::checkpoint::{self, CheckpointMeta, ValPoint};
use crate::runs::CheckpointRef;

/// What scoring does beside scoring.
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    /// Recompute every part's own loss instead of reading it from the cache.
    pub no_cache: bool,
    /// Save the stack as a checkpoint folder here (it must not exist).
    pub save: Option<PathBuf>,
}

/// The tokens, sequence length and batch a stack is scored with: the options, else the first
/// model's (its val tokens and length), else 10,485,760 tokens and 64 (CUDA) or 16.
fn sizes(
    eval: &EvalOptions,
    default_tokens: Option<i64>,
    seq_len: i64,
    device: Device,
) -> Result<(i64, i64, i64)> {
    let tokens = eval.tokens.or(default_tokens).unwrap_or(10_485_760);
    let seq_len = eval.seq_len.unwrap_or(seq_len);
    let batch = eval.batch.unwrap_or(if device.is_cuda() { 64 } else { 16 });
    anyhow::ensure!(
        batch > 0 && seq_len > 0 && tokens > 0,
        "--batch, --seq-len and --tokens must be positive"
    );
    Ok((tokens, seq_len, batch))
}

/// Refuses to save a stack over anything that exists (before any work is done).
pub fn check_save_target(dir: &Path) -> Result<()> {
    if dir.exists() {
        bail!(
            "--save {}: {} already exists: give a new folder to save into",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Scores the stack beside its parts and returns the report (`started`: when the work
/// began, for its `seconds`).
pub fn score(
    prepared: &Prepared,
    eval: &EvalOptions,
    opts: &ScoreOptions,
    device: Device,
    progress: &mut dyn Sink,
    started: Instant,
) -> Result<StackReport> {
    if let Some(dir) = &opts.save {
        check_save_target(dir)?;
    }
    let (norms, loaded, part_of) = (prepared.norms, &prepared.loaded, &prepared.part_of);
    let parts = prepared.parts();
    let (val_glob, default_tokens, data_cfg) = data_source(eval, prepared.first())?;
    if opts.save.is_some() && data_cfg.is_none() {
        bail!(
            "--save: a saved stack records its models' training data, and `{}` (a seed-format file) does not say which it was: give --train-data GLOB",
            prepared.first().name()
        );
    }
    let (tokens, seq_len, batch) = sizes(eval, default_tokens, parts[0].model.cfg.seq_len, device)?;
    let mut loader = ShardLoader::from_glob(&val_glob, batch as usize, seq_len as usize)
        .with_context(|| format!("--data {val_glob}"))?;

    let stack = assemble::assemble(&parts, &norms, seq_len);
    let sizes = Sizes {
        tokens,
        seq_len,
        batch,
    };
    let (scores, own) = score_pass(prepared, &stack, &mut loader, sizes, opts, device, progress)?;
    let val_loss_stack = scores.losses[0];
    let saved = match &opts.save {
        Some(dir) => Some(save_stack(
            dir,
            &stack,
            prepared.first(),
            data_cfg.expect("checked before scoring"),
            tokens,
            val_loss_stack,
            device,
        )?),
        None => None,
    };
    let val_losses: Vec<f64> = part_of.iter().map(|&j| own[j].0).collect();
    let best = val_losses.iter().copied().fold(f64::INFINITY, f64::min);
    let (use_first_layer, use_last_layer) = match flags_of(&prepared.ranges, &prepared.depths) {
        Some((f, l)) => (Some(f), Some(l)),
        None => (None, None),
    };
    Ok(StackReport {
        val_loss_stack,
        mean_val_loss: val_losses.iter().sum::<f64>() / val_losses.len() as f64,
        delta_vs_best: val_loss_stack - best,
        val_losses,
        use_first_layer,
        use_last_layer,
        norm_wte: norms.norm_wte,
        norm_lm_head: norms.norm_lm_head,
        norm_inter_model: norms.norm_inter_model,
        unique_model: loaded.len() > 1,
        block_list: assemble::block_list(&parts),
        blocks: block_entries(&stack),
        models: model_entries(prepared, &own),
        data: val_glob,
        tokens: scores.tokens,
        seq_len,
        batch,
        device: crate::device::name(device),
        warnings: prepared.warnings.clone(),
        saved: saved.map(|p| p.display().to_string()),
        seconds: started.elapsed().as_secs_f64(),
        created_at: chrono::Utc::now().to_rfc3339(),
    })
}

/// What a stack is scored on.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    tokens: i64,
    seq_len: i64,
    batch: i64,
}

/// One pass over the tokens: the stack, and each distinct model whose own loss is not in
/// the cache (what is scored goes into it). Returns the pass's scores (the stack first) and
/// every distinct model's own loss with whether it came from the cache.
fn score_pass(
    prepared: &Prepared,
    stack: &assemble::Stack,
    loader: &mut ShardLoader,
    sizes: Sizes,
    opts: &ScoreOptions,
    device: Device,
    progress: &mut dyn Sink,
) -> Result<(crate::eval::Scores, Vec<(f64, bool)>)> {
    let loaded = &prepared.loaded;
    let data = loader
        .files()
        .iter()
        .map(|f| DataFile::of(f))
        .collect::<Result<Vec<_>>>()?;
    let cache = LossCache::in_data_dir();
    let keys: Vec<LossKey> = loaded
        .iter()
        .map(|l| LossKey {
            model_id: l.id.clone(),
            data: data.clone(),
            tokens: sizes.tokens,
            seq_len: sizes.seq_len,
            batch: sizes.batch,
            device: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
        })
        .collect();
    let mut own: Vec<Option<(f64, bool)>> = keys
        .iter()
        .map(|k| {
            (!opts.no_cache)
                .then(|| cache.get(k).map(|(l, _)| (l, true)))
                .flatten()
        })
        .collect();
    let to_score: Vec<usize> = (0..loaded.len()).filter(|&j| own[j].is_none()).collect();
    let mut models: Vec<&dyn LanguageModel> = vec![&stack.model];
    models.extend(
        to_score
            .iter()
            .map(|&j| &loaded[j].model as &dyn LanguageModel),
    );
    let scores = evaluate_many(&models, loader, sizes.tokens, device, progress)?;
    for (k, &j) in to_score.iter().enumerate() {
        let loss = scores.losses[k + 1];
        own[j] = Some((loss, false));
        if let Err(e) = cache.put(&keys[j], loss, scores.tokens) {
            eprintln!("warning: cannot cache {}'s loss: {e:#}", loaded[j].label);
        }
    }
    let own = own.into_iter().map(|o| o.expect("scored")).collect();
    Ok((scores, own))
}

fn block_entries(stack: &assemble::Stack) -> Vec<BlockEntry> {
    stack
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
        .collect()
}

/// Each part as the report tells it, with its model's own loss (and whether it was cached).
fn model_entries(prepared: &Prepared, own: &[(f64, bool)]) -> Vec<ModelEntry> {
    prepared
        .part_of
        .iter()
        .zip(&prepared.ranges)
        .map(|(&j, r)| {
            let l = &prepared.loaded[j];
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
        .collect()
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
