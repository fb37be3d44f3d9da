//! Typed experiment configs: one struct tree for a training run, read from TOML, with
//! `--set key.path=value` overrides and errors that name the file, the key and what is allowed.
//!
//! Missing keys take the seed's GPT-2-small recipe (see `configs/gpt2-small-seed.toml`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A normalisation without weights, applied to the embeddings, the lm-head input, or at a
/// stack boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    #[default]
    None,
    RmsNorm,
    LayerNorm,
}

impl NormKind {
    pub const ALL: [NormKind; 3] = [NormKind::None, NormKind::RmsNorm, NormKind::LayerNorm];
    pub fn as_str(self) -> &'static str {
        match self {
            NormKind::None => "none",
            NormKind::RmsNorm => "rms_norm",
            NormKind::LayerNorm => "layer_norm",
        }
    }
}

impl fmt::Display for NormKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NormKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        NormKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .with_context(|| {
                format!("unknown norm `{s}`: expected one of none, rms_norm, layer_norm")
            })
    }
}

/// The GPT's shape and its two outer norms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    pub seq_len: i64,
    pub norm_wte: NormKind,
    pub norm_lm_head: NormKind,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 50304,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            seq_len: 1024,
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
        }
    }
}

impl ModelConfig {
    /// Refuses shapes the model cannot have, naming the key (under `model.`).
    pub fn validate(&self, source: &str) -> Result<()> {
        let m = self;
        let positive: [(&str, i64); 5] = [
            ("model.vocab_size", m.vocab_size),
            ("model.n_layer", m.n_layer),
            ("model.n_head", m.n_head),
            ("model.n_embd", m.n_embd),
            ("model.seq_len", m.seq_len),
        ];
        for (key, v) in positive {
            if v <= 0 {
                return Err(err(source, key, format!("must be at least 1, found {v}")));
            }
        }
        if m.n_embd % m.n_head != 0 {
            return Err(err(
                source,
                "model.n_embd",
                format!(
                    "width {} is not divisible by model.n_head = {} (each head needs n_embd / n_head dims)",
                    m.n_embd, m.n_head
                ),
            ));
        }
        if (m.n_embd / m.n_head) % 2 != 0 {
            return Err(err(
                source,
                "model.n_head",
                format!(
                    "head size n_embd / n_head = {} must be even for rotary embeddings",
                    m.n_embd / m.n_head
                ),
            ));
        }
        if m.vocab_size > 65_535 {
            return Err(err(
                source,
                "model.vocab_size",
                format!(
                    "{} does not fit the uint16 tokens of the shard format (at most 65,535)",
                    m.vocab_size
                ),
            ));
        }
        Ok(())
    }
}

/// AdamW for the shared embedding/lm-head matrix `W`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 0.0036,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Muon for every matrix inside the transformer blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuonConfig {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub ns_steps: i64,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig {
            lr: 0.00036,
            momentum: 0.95,
            nesterov: true,
            ns_steps: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub adamw: AdamWConfig,
    pub muon: MuonConfig,
}

/// Warm-up, constant, then linear warm-down, as a factor on both optimizers' lr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub steps: i64,
    pub warmup: i64,
    pub warmdown: i64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            steps: 6200,
            warmup: 0,
            warmdown: 1800,
        }
    }
}

/// Sequences per optimizer step (`global_batch`) and per forward pass (`micro_batch`);
/// `devices` data-parallel devices each run `global_batch / devices / micro_batch`
/// accumulation steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    pub global_batch: i64,
    pub micro_batch: i64,
    pub devices: i64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            global_batch: 512,
            micro_batch: 64,
            devices: 1,
        }
    }
}

impl BatchConfig {
    pub fn accumulation_steps(&self) -> i64 {
        self.global_batch / (self.micro_batch * self.devices)
    }
}

/// Training data: shard globs, or the embedded corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Use the corpus shipped with stacklab (prepared on first use).
    pub embedded: bool,
    /// Glob of training shards (modded-nanogpt format), e.g. `data/fineweb10B/fineweb_train_*.bin`.
    pub train: String,
    /// Glob of validation shards.
    pub val: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Validation tokens per evaluation (from the start of the val shards).
    pub val_tokens: i64,
    /// Validate every this many steps (and at the end); 0 validates only at the end.
    pub val_every: i64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            val_tokens: 10_485_760,
            val_every: 125,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CoconutMode {
    /// The blog's definition: the input at t+1 is the output hidden state at t.
    #[default]
    Shifted,
    /// The input at t is replaced by the output hidden state at t.
    SamePosition,
    /// The seed's code: latents of one batch are scored against the next batch's targets.
    Seed,
}

impl CoconutMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CoconutMode::Shifted => "shifted",
            CoconutMode::SamePosition => "same_position",
            CoconutMode::Seed => "seed",
        }
    }
}

/// COCONUT-parallel steps: every `every`-th step adds a latent pass per micro-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoconutConfig {
    /// 0 turns COCONUT-parallel steps off.
    pub every: i64,
    pub mode: CoconutMode,
    /// Detach the latents (no gradient through the first pass), as the seed does.
    pub detach: bool,
}

impl Default for CoconutConfig {
    fn default() -> Self {
        CoconutConfig {
            every: 0,
            mode: CoconutMode::Shifted,
            detach: true,
        }
    }
}

/// Numerics of the training forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 matmuls on CUDA (the seed's autocast), fp32 on the CPU.
    #[default]
    Auto,
    Bf16,
    Fp32,
}

/// One training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: i64,
    /// Write a checkpoint every this many steps (and always at the end); 0: only at the end.
    pub checkpoint_every: i64,
    /// Print a progress line every this many steps when not on a terminal.
    pub log_every: i64,
    /// A checkpoint whose embedding/head `W` is copied and frozen (model 2 of a stack).
    pub from_model: String,
    pub precision: Precision,
    pub model: ModelConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub batch: BatchConfig,
    pub data: DataConfig,
    pub eval: EvalConfig,
    pub coconut: CoconutConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            checkpoint_every: 1000,
            log_every: 10,
            from_model: String::new(),
            precision: Precision::Auto,
            model: ModelConfig::default(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            batch: BatchConfig::default(),
            data: DataConfig {
                embedded: false,
                train: "data/fineweb10B/fineweb_train_*.bin".into(),
                val: "data/fineweb10B/fineweb_val_*.bin".into(),
            },
            eval: EvalConfig::default(),
            coconut: CoconutConfig::default(),
        }
    }
}

/// A config error: where it came from (file or `--set`), which key, and what was wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.source, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(source: &str, key: &str, message: impl Into<String>) -> anyhow::Error {
    ConfigError {
        source: source.to_string(),
        key: key.to_string(),
        message: message.into(),
    }
    .into()
}

/// Values a string key may take, for the keys that are enums.
fn allowed_values(key: &str) -> Option<&'static [&'static str]> {
    match key {
        "model.norm_wte" | "model.norm_lm_head" => Some(&["none", "rms_norm", "layer_norm"]),
        "coconut.mode" => Some(&["shifted", "same_position", "seed"]),
        "precision" => Some(&["auto", "bf16", "fp32"]),
        _ => None,
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

fn short(v: &toml::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// The key tree of a full config, used to check a user's keys and types.
fn schema() -> toml::Table {
    toml::Table::try_from(TrainConfig::default()).expect("the default config serialises")
}

fn nearest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a String>) -> Option<String> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn all_paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = join(prefix, k);
        if let toml::Value::Table(t) = v {
            all_paths(t, &path, out);
        }
        out.push(path);
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Checks every key of `user` against the schema: unknown keys (with the nearest valid
/// key), wrong types, and enum values outside their list.
fn check_keys(user: &toml::Table, schema: &toml::Table, prefix: &str, source: &str) -> Result<()> {
    for (k, v) in user {
        let path = join(prefix, k);
        let Some(expected) = schema.get(k) else {
            let mut paths = Vec::new();
            all_paths(&self::schema(), "", &mut paths);
            let siblings: Vec<String> = schema.keys().map(|s| join(prefix, s)).collect();
            let hint = nearest(&path, siblings.iter())
                .or_else(|| nearest(&path, paths.iter()))
                .or_else(|| nearest(k, paths.iter().filter(|p| p.ends_with(&format!(".{k}")))))
                .or_else(|| {
                    paths
                        .iter()
                        .find(|p| p.ends_with(&format!(".{k}")))
                        .cloned()
                });
            let msg = match hint {
                Some(h) => format!("unknown key; did you mean `{h}`?"),
                None => {
                    let valid: Vec<&str> = schema.keys().map(|s| s.as_str()).collect();
                    format!("unknown key; valid keys here: {}", valid.join(", "))
                }
            };
            return Err(err(source, &path, msg));
        };
        match (expected, v) {
            (toml::Value::Table(s), toml::Value::Table(u)) => check_keys(u, s, &path, source)?,
            (toml::Value::Table(_), other) => {
                return Err(err(
                    source,
                    &path,
                    format!(
                        "expected a table of keys, found {} {}",
                        type_name(other),
                        short(other)
                    ),
                ))
            }
            (toml::Value::Float(_), toml::Value::Integer(_)) => {}
            (toml::Value::Array(s), toml::Value::Array(u)) => {
                if u.len() != s.len() {
                    return Err(err(
                        source,
                        &path,
                        format!(
                            "expected an array of {} numbers, found {} values",
                            s.len(),
                            u.len()
                        ),
                    ));
                }
                if let Some(bad) = u
                    .iter()
                    .find(|x| !matches!(x, toml::Value::Float(_) | toml::Value::Integer(_)))
                {
                    return Err(err(
                        source,
                        &path,
                        format!("expected numbers, found {} {}", type_name(bad), short(bad)),
                    ));
                }
            }
            (e, u) if std::mem::discriminant(e) != std::mem::discriminant(u) => {
                let mut msg = format!(
                    "expected {}, found {} {}",
                    type_name(e),
                    type_name(u),
                    short(u)
                );
                if let Some(allowed) = allowed_values(&path) {
                    msg.push_str(&format!(" (allowed: {})", allowed.join(", ")));
                }
                return Err(err(source, &path, msg));
            }
            (_, toml::Value::String(s)) => {
                if let Some(allowed) = allowed_values(&path) {
                    if !allowed.contains(&s.as_str()) {
                        return Err(err(
                            source,
                            &path,
                            format!(
                                "`{s}` is not allowed; expected one of: {}",
                                allowed.join(", ")
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses a `--set` value: a TOML value (`3`, `1e-3`, `true`, `[0.9, 0.95]`, `"x"`), or else
/// the bare text as a string (`rms_norm`).
fn parse_override_value(text: &str) -> toml::Value {
    let text = text.trim();
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(text.into())),
        Err(_) => toml::Value::String(text.to_string()),
    }
}

/// Applies `key.path=value` to a TOML table, creating intermediate tables.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let source = format!("--set {assignment}");
    let Some((key, value)) = assignment.split_once('=') else {
        return Err(err(&source, "", "expected key.path=value"));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.trim().is_empty()) {
        return Err(err(
            &source,
            key,
            "expected a dotted key path like model.n_layer",
        ));
    }
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(err(&source, key, format!("`{p}` is not a table"))),
        };
    }
    cur.insert(
        parts[parts.len() - 1].to_string(),
        parse_override_value(value),
    );
    // Check the override alone, so its error names --set rather than the file.
    let mut alone = toml::Table::new();
    let mut c = &mut alone;
    for p in &parts[..parts.len() - 1] {
        c = c
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("just inserted a table");
    }
    c.insert(
        parts[parts.len() - 1].to_string(),
        parse_override_value(value),
    );
    check_keys(&alone, &schema(), "", &source)
}

impl TrainConfig {
    /// Reads a config file, applies `--set` overrides, and validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (named `source` in errors), applies overrides, validates.
    pub fn from_toml_str(text: &str, source: &str, overrides: &[String]) -> Result<TrainConfig> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1))
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            err(source, "", format!("not valid TOML{line}: {}", e.message()))
        })?;
        check_keys(&table, &schema(), "", source)?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let cfg: TrainConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| err(source, &e.path().to_string(), e.inner().to_string()))?;
        cfg.validate(source)?;
        Ok(cfg)
    }

    /// Refuses impossible combinations, naming the keys involved.
    pub fn validate(&self, source: &str) -> Result<()> {
        self.model.validate(source)?;
        let positive: [(&str, i64); 4] = [
            ("schedule.steps", self.schedule.steps),
            ("batch.global_batch", self.batch.global_batch),
            ("batch.micro_batch", self.batch.micro_batch),
            ("batch.devices", self.batch.devices),
        ];
        for (key, v) in positive {
            if v <= 0 {
                return Err(err(source, key, format!("must be at least 1, found {v}")));
            }
        }
        let non_negative: [(&str, i64); 6] = [
            ("schedule.warmup", self.schedule.warmup),
            ("schedule.warmdown", self.schedule.warmdown),
            ("eval.val_every", self.eval.val_every),
            ("checkpoint_every", self.checkpoint_every),
            ("coconut.every", self.coconut.every),
            ("log_every", self.log_every),
        ];
        for (key, v) in non_negative {
            if v < 0 {
                return Err(err(source, key, format!("must be 0 or more, found {v}")));
            }
        }
        let m = &self.model;
        let b = &self.batch;
        if b.global_batch % (b.micro_batch * b.devices) != 0 {
            return Err(err(
                source,
                "batch.global_batch",
                format!(
                    "{} sequences is not divisible by batch.micro_batch x batch.devices = {} x {} = {}",
                    b.global_batch,
                    b.micro_batch,
                    b.devices,
                    b.micro_batch * b.devices
                ),
            ));
        }
        let s = &self.schedule;
        if s.warmdown > s.steps {
            return Err(err(
                source,
                "schedule.warmdown",
                format!("{} is more than schedule.steps = {}", s.warmdown, s.steps),
            ));
        }
        if s.warmup + s.warmdown > s.steps {
            return Err(err(
                source,
                "schedule.warmup",
                format!(
                    "warmup {} + warmdown {} is more than schedule.steps = {}",
                    s.warmup, s.warmdown, s.steps
                ),
            ));
        }
        let d = &self.data;
        if d.embedded && (!d.train.is_empty() || !d.val.is_empty()) {
            return Err(err(
                source,
                "data.embedded",
                "is true but data.train / data.val are also set: use one or the other",
            ));
        }
        if !d.embedded && (d.train.is_empty() || d.val.is_empty()) {
            return Err(err(
                source,
                if d.train.is_empty() { "data.train" } else { "data.val" },
                "is empty: give shard globs for data.train and data.val, or set data.embedded = true",
            ));
        }
        if self.eval.val_tokens < m.seq_len {
            return Err(err(
                source,
                "eval.val_tokens",
                format!(
                    "{} is less than one sequence (model.seq_len = {})",
                    self.eval.val_tokens, m.seq_len
                ),
            ));
        }
        if self.optimizer.muon.ns_steps < 1 {
            return Err(err(source, "optimizer.muon.ns_steps", "must be at least 1"));
        }
        for (key, v) in [
            ("optimizer.adamw.lr", self.optimizer.adamw.lr),
            ("optimizer.muon.lr", self.optimizer.muon.lr),
            ("optimizer.adamw.eps", self.optimizer.adamw.eps),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(err(
                    source,
                    key,
                    format!("must be a finite number >= 0, found {v}"),
                ));
            }
        }
        for (i, beta) in self.optimizer.adamw.betas.iter().enumerate() {
            if !(0.0..1.0).contains(beta) {
                return Err(err(
                    source,
                    "optimizer.adamw.betas",
                    format!("beta{} = {beta} must be in [0, 1)", i + 1),
                ));
            }
        }
        Ok(())
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a config serialises to TOML")
    }

    /// Tokens of one optimizer step.
    pub fn tokens_per_step(&self) -> i64 {
        self.batch.global_batch * self.model.seq_len
    }
}

/// Finds a config by path, or by name in the config dir (`tiny` -> `configs/tiny.toml`).
pub fn resolve_config_path(name: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(name);
    if direct.is_file() {
        return Ok(direct);
    }
    let dir = crate::paths::config_dir();
    for candidate in [dir.join(name), dir.join(format!("{name}.toml"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "config `{name}` not found (looked at {} and in {})",
        direct.display(),
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TrainConfig> {
        TrainConfig::from_toml_str(text, "test.toml", &[])
    }

    fn parse_err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const EMBEDDED: &str = "[data]\nembedded = true\ntrain = \"\"\nval = \"\"\n";

    #[test]
    fn defaults_are_the_seed_recipe() {
        let c = TrainConfig::default();
        assert_eq!(
            (c.model.n_layer, c.model.n_embd, c.model.vocab_size),
            (12, 768, 50304)
        );
        assert_eq!(c.batch.accumulation_steps(), 8);
        assert_eq!(c.tokens_per_step(), 524_288);
        assert_eq!(c.optimizer.adamw.lr, 0.0036);
        assert_eq!(c.optimizer.muon.lr, 0.00036);
        c.validate("defaults").unwrap();
    }

    #[test]
    fn unknown_key_names_the_file_and_the_nearest_key() {
        let e = parse_err("[optimizer.muon]\nlrr = 0.1\n");
        assert_eq!(
            e,
            "test.toml: `optimizer.muon.lrr`: unknown key; did you mean `optimizer.muon.lr`?"
        );
        let e = parse_err("[model]\nn_layers = 4\n");
        assert!(
            e.contains("`model.n_layers`: unknown key; did you mean `model.n_layer`?"),
            "{e}"
        );
        let e = parse_err("val_tokens = 4\n");
        assert!(
            e.contains("`val_tokens`: unknown key; did you mean `eval.val_tokens`?"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_is_refused_with_key_and_types() {
        let e = parse_err("[model]\nn_layer = \"four\"\n");
        assert_eq!(
            e,
            "test.toml: `model.n_layer`: expected an integer, found a string \"four\""
        );
        let e = parse_err("[optimizer.adamw]\nbetas = 0.9\n");
        assert!(
            e.contains("`optimizer.adamw.betas`: expected an array"),
            "{e}"
        );
        // An integer where a float is expected is fine.
        let c = parse(&format!("{EMBEDDED}[optimizer.adamw]\nlr = 1\n")).unwrap();
        assert_eq!(c.optimizer.adamw.lr, 1.0);
    }

    #[test]
    fn enum_value_outside_the_list_is_refused() {
        let e = parse_err("[model]\nnorm_wte = \"rms\"\n");
        assert_eq!(
            e,
            "test.toml: `model.norm_wte`: `rms` is not allowed; expected one of: none, rms_norm, layer_norm"
        );
        let e = parse_err("[coconut]\nmode = \"loop\"\n");
        assert!(
            e.contains("expected one of: shifted, same_position, seed"),
            "{e}"
        );
    }

    #[test]
    fn impossible_combinations_are_refused() {
        let e = parse_err(&format!("{EMBEDDED}[model]\nn_embd = 100\nn_head = 3\n"));
        assert!(
            e.contains("`model.n_embd`: width 100 is not divisible by model.n_head = 3"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{EMBEDDED}[batch]\nglobal_batch = 100\nmicro_batch = 16\n"
        ));
        assert!(
            e.contains("`batch.global_batch`: 100 sequences is not divisible by batch.micro_batch x batch.devices = 16 x 1 = 16"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{EMBEDDED}[batch]\nglobal_batch = 64\nmicro_batch = 16\ndevices = 3\n"
        ));
        assert!(e.contains("16 x 3 = 48"), "{e}");
        let e = parse_err(&format!("{EMBEDDED}[model]\nvocab_size = 70000\n"));
        assert!(
            e.contains("`model.vocab_size`: 70000 does not fit the uint16 tokens of the shard format (at most 65,535)"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{EMBEDDED}[schedule]\nsteps = 100\nwarmdown = 200\n"
        ));
        assert!(
            e.contains("`schedule.warmdown`: 200 is more than schedule.steps = 100"),
            "{e}"
        );
    }

    #[test]
    fn set_overrides_any_key_and_is_checked() {
        let c = TrainConfig::from_toml_str(
            EMBEDDED,
            "t.toml",
            &[
                "model.n_layer=2".into(),
                "model.norm_wte=rms_norm".into(),
                "optimizer.adamw.betas=[0.8, 0.9]".into(),
                "coconut.every = 10".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.model.n_layer, 2);
        assert_eq!(c.model.norm_wte, NormKind::RmsNorm);
        assert_eq!(c.optimizer.adamw.betas, [0.8, 0.9]);
        assert_eq!(c.coconut.every, 10);
        let e = TrainConfig::from_toml_str(EMBEDDED, "t.toml", &["model.n_layr=2".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "--set model.n_layr=2: `model.n_layr`: unknown key; did you mean `model.n_layer`?"
            ),
            "{e}"
        );
        let e = TrainConfig::from_toml_str(EMBEDDED, "t.toml", &["seed".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected key.path=value"), "{e}");
    }

    #[test]
    fn invalid_toml_names_the_line() {
        let e = parse_err("[model]\nn_layer = = 3\n");
        assert!(e.starts_with("test.toml: not valid TOML (line 2)"), "{e}");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = TrainConfig::default();
        let back = TrainConfig::from_toml_str(&c.to_toml_string(), "x", &[]).unwrap();
        assert_eq!(c, back);
    }
}
