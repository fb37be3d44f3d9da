//! Which stack, and the data it is scored on, as `stack` and `inspect` share it: the
//! selection arguments, the spec they describe, the default data, and the prepared stack.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use tch::Device;

use super::assemble::{self, PartView};
use super::identity::model_id;
use super::spec::{BlockRange, Layers, StackNorms, StackSpec};
use crate::config::{DataConfig, NormKind, TrainConfig};
use crate::model::weights::SeedOptions;
use crate::model::Gpt;
use crate::runs::checkpoint;
use crate::runs::CheckpointRef;

/// How a stack is scored, beside its spec: the data, and what seed-format files cannot
/// tell. `None` everywhere means the defaults (the first model's data and sizes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalOptions {
    /// Val shard glob, or `embedded`.
    pub data: Option<String>,
    /// Train shards: what `inspect` fits its stitches on and a saved stack records.
    pub train_data: Option<String>,
    /// The norms seed-format files were trained with (norm_wte, norm_lm_head), for files
    /// whose metadata does not say.
    pub part_norms: Option<(NormKind, NormKind)>,
    pub tokens: Option<i64>,
    pub seq_len: Option<i64>,
    pub batch: Option<i64>,
    /// Heads of seed-named files (default width / 64).
    pub n_head: Option<i64>,
}

/// A distinct model of the stack (by its [`model_id`]: weights and block layout), loaded once.
pub struct Loaded {
    pub label: String,
    pub ckpt: CheckpointRef,
    pub path: PathBuf,
    /// SHA-256 of the weights file.
    pub sha256: String,
    /// What the model computes: weights, outer norms, block layout ([`model_id`]).
    pub id: String,
    /// The model as it scores its own loss: with the norms it was trained with when known.
    pub model: Gpt,
    /// The norms it was trained with (norm_wte, norm_lm_head), when known.
    pub trained_norms: Option<(NormKind, NormKind)>,
    /// Where those came from: `meta.toml`, `file metadata` or `--part-norms`.
    pub trained_norms_from: Option<&'static str>,
}

/// The norms a seed-format file records in its metadata (`stacklab export` writes both).
fn seed_file_norms(path: &std::path::Path) -> Result<Option<(NormKind, NormKind)>> {
    use crate::model::weights::{read_metadata, META_NORM_LM_HEAD, META_NORM_WTE};
    let meta = read_metadata(path)?;
    let norm = |key: &str| -> Result<Option<NormKind>> {
        meta.get(key)
            .map(|v| {
                v.parse::<NormKind>()
                    .with_context(|| format!("{}: metadata {key}", path.display()))
            })
            .transpose()
    };
    Ok(match (norm(META_NORM_WTE)?, norm(META_NORM_LM_HEAD)?) {
        (Some(w), Some(h)) => Some((w, h)),
        _ => None,
    })
}

fn resolved_path(c: &CheckpointRef) -> PathBuf {
    let p = match c {
        CheckpointRef::Native(n) => n.path.clone(),
        CheckpointRef::SeedFile(f) => f.clone(),
    };
    std::fs::canonicalize(&p).unwrap_or(p)
}

/// The first model's training shards, when it says (a seed-format file does not).
pub fn first_train_glob(first: &CheckpointRef) -> Result<Option<String>> {
    match first {
        CheckpointRef::Native(c) => {
            let cfg = TrainConfig::from_toml_str(
                &c.config_toml()?,
                &c.path.join(checkpoint::CONFIG_FILE).display().to_string(),
                &[],
            )?;
            Ok(Some(crate::data::DataSource::from_config(&cfg.data)?.train))
        }
        CheckpointRef::SeedFile(_) => Ok(None),
    }
}

/// Val shards and default token count: `--data`, else what the first model trained on,
/// with the data section a saved stack's config should carry: its models' own training
/// shards (`--train-data`, else the first model's) and the val shards scored, never one
/// glob for both. `None` when the training shards are unknown (a seed-format file and no
/// `--train-data`).
pub fn data_source(
    sel: &EvalOptions,
    first: &CheckpointRef,
) -> Result<(String, Option<i64>, Option<DataConfig>)> {
    let train = match &sel.train_data {
        Some(t) => Some(t.clone()),
        None => first_train_glob(first)?,
    };
    match (&sel.data, first) {
        (Some(d), _) if d == "embedded" => {
            let ds = crate::data::embedded::ensure_prepared()?;
            let cfg = match &sel.train_data {
                None => DataConfig {
                    embedded: true,
                    ..DataConfig::default()
                },
                Some(t) => DataConfig {
                    embedded: false,
                    train: t.clone(),
                    val: ds.val_glob(),
                    ..DataConfig::default()
                },
            };
            Ok((ds.val_glob(), None, Some(cfg)))
        }
        (Some(d), _) => Ok((
            d.clone(),
            None,
            train.map(|t| DataConfig {
                embedded: false,
                train: t,
                val: d.clone(),
                ..DataConfig::default()
            }),
        )),
        (None, CheckpointRef::Native(c)) => {
            let cfg = TrainConfig::from_toml_str(
                &c.config_toml()?,
                &c.path.join(checkpoint::CONFIG_FILE).display().to_string(),
                &[],
            )?;
            let val = crate::data::DataSource::from_config(&cfg.data)?.val;
            let data = match &sel.train_data {
                None => cfg.data,
                Some(t) => DataConfig {
                    embedded: false,
                    train: t.clone(),
                    val: val.clone(),
                    ..cfg.data
                },
            };
            Ok((val, Some(cfg.eval.val_tokens), Some(data)))
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
                trained_norms: self.loaded[j].trained_norms,
            })
            .collect()
    }

    /// The spec with every model's resolved path and its weights' SHA-256 (what
    /// `--save-spec` writes, so the same stack can be scored again and checked).
    pub fn resolved_spec(&self) -> StackSpec {
        StackSpec {
            models: self
                .part_of
                .iter()
                .map(|&j| self.loaded[j].path.display().to_string())
                .collect(),
            layers: self.spec.layers.clone(),
            norms: self.norms,
            sha256: self
                .part_of
                .iter()
                .map(|&j| Some(self.loaded[j].sha256.clone()))
                .collect(),
        }
    }

    /// The first part's checkpoint (its data is the default data).
    pub fn first(&self) -> &CheckpointRef {
        &self.loaded[self.part_of[0]].ckpt
    }
}

/// Resolves, loads and checks a stack; refuses what cannot be
/// stacked before anything is computed.
pub fn prepare(spec: &StackSpec, eval: &EvalOptions, device: Device) -> Result<Prepared> {
    spec.check_shape()?;
    let spec = spec.clone();
    let norms = spec.norms;
    let (loaded, part_of, mut warnings) = load_distinct(&spec, eval, device)?;

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
            trained_norms: loaded[j].trained_norms,
        })
        .collect();
    assemble::check(&parts, matches!(spec.layers, Layers::Flags { .. }))?;
    warnings.extend(assemble::warnings(&parts, &norms));
    drop(parts);
    let unknown: Vec<String> = loaded
        .iter()
        .filter(|l| l.trained_norms.is_none())
        .map(|l| format!("{} (`{}`)", l.label, l.ckpt.name()))
        .collect();
    if !unknown.is_empty() {
        warnings.push(format!(
            "the training norms of {} are unknown (seed-format files whose metadata does not record them): their own losses use the stack's norm_wte {} and norm_lm_head {}; give --part-norms NORM_WTE/NORM_LM_HEAD if they were trained with others",
            unknown.join(", "),
            norms.norm_wte,
            norms.norm_lm_head
        ));
    }

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

/// Resolves every model, hashes its weights and loads each distinct one once: the same file
/// once, and two files that compute the same function ([`model_id`]) as one model. Returns
/// the models, each part's index among them, and the warnings (a spec's recorded sha256
/// that no longer matches).
fn load_distinct(
    spec: &StackSpec,
    eval: &EvalOptions,
    device: Device,
) -> Result<(Vec<Loaded>, Vec<usize>, Vec<String>)> {
    let (norms, part_norms) = (spec.norms, eval.part_norms);
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
        let idx = match loaded.iter().position(|l| l.path == path) {
            Some(j) => j,
            None => {
                let l = load_part(
                    m,
                    ckpt,
                    path,
                    sha.clone(),
                    &norms,
                    eval.n_head,
                    part_norms,
                    device,
                )?;
                match loaded.iter().position(|x| x.id == l.id) {
                    Some(j) => j,
                    None => {
                        loaded.push(Loaded {
                            label: format!("m{}", loaded.len() + 1),
                            ..l
                        });
                        loaded.len() - 1
                    }
                }
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

    Ok((loaded, part_of, warnings))
}

/// Loads one model of the stack as it scores its own loss: a checkpoint with the norms it
/// was trained with (`meta.toml`); a seed-format file with the norms its metadata records,
/// else `--part-norms`, else (unknown) the stack's norms.
#[allow(clippy::too_many_arguments)]
fn load_part(
    arg: &str,
    ckpt: CheckpointRef,
    path: PathBuf,
    sha256: String,
    norms: &StackNorms,
    n_head: Option<i64>,
    part_norms: Option<(NormKind, NormKind)>,
    device: Device,
) -> Result<Loaded> {
    let (opts, trained, from) = match &ckpt {
        CheckpointRef::Native(c) => (
            SeedOptions::default(),
            Some((c.meta.model.norm_wte, c.meta.model.norm_lm_head)),
            Some("meta.toml"),
        ),
        CheckpointRef::SeedFile(p) => {
            let (known, from) = match (seed_file_norms(p)?, part_norms) {
                (Some(n), _) => (Some(n), Some("file metadata")),
                (None, Some(n)) => (Some(n), Some("--part-norms")),
                (None, None) => (None, None),
            };
            let (w, h) = known.unwrap_or((norms.norm_wte, norms.norm_lm_head));
            let opts = SeedOptions {
                n_head,
                norm_wte: Some(w),
                norm_lm_head: Some(h),
                seq_len: None,
            };
            (opts, known, from)
        }
    };
    let model = ckpt
        .load_model(&opts, device)
        .with_context(|| format!("cannot load `{arg}`"))?;
    Ok(Loaded {
        label: String::new(),
        id: model_id(&sha256, &model),
        ckpt,
        path,
        sha256,
        model,
        trained_norms: trained,
        trained_norms_from: from,
    })
}
