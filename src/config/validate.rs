//! Validation of a parsed config: ranges of every value and combinations that cannot work,
//! each refused with the key it concerns.

use anyhow::Result;

use super::keys::err;
use super::{ModelConfig, TrainConfig};

impl ModelConfig {
    /// Refuses shapes no model can have (any model loaded or built), naming the key (under
    /// `model.`): positive sizes, a width the heads divide, an even head size for rotary,
    /// and a size that fits ([`MAX_PARAMETERS`](super::bounds::MAX_PARAMETERS), one
    /// sequence's [`MAX_ACTIVATIONS`](super::bounds::MAX_ACTIVATIONS)).
    pub fn validate_shape(&self, source: &str) -> Result<()> {
        self.check_shape_rules(source)?;
        self.check_size(source)
    }

    fn check_shape_rules(&self, source: &str) -> Result<()> {
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
                    "{} heads on width {} give head size {}, which must be even for rotary embeddings",
                    m.n_head,
                    m.n_embd,
                    m.n_embd / m.n_head
                ),
            ));
        }
        Ok(())
    }

    /// [`validate_shape`](Self::validate_shape), and a vocabulary the shard format can index
    /// (what a model to train needs).
    pub fn validate(&self, source: &str) -> Result<()> {
        self.check_shape_rules(source)?;
        if self.vocab_size > MAX_VOCAB {
            return Err(err(
                source,
                "model.vocab_size",
                format!(
                    "{} does not fit the uint16 tokens of the shard format (at most 65,536: ids 0 to 65,535)",
                    self.vocab_size
                ),
            ));
        }
        self.check_size(source)
    }
}

/// uint16 shards hold token ids 0..=65535.
pub const MAX_VOCAB: i64 = 65_536;

impl TrainConfig {
    /// Refuses impossible combinations, naming the keys involved.
    pub fn validate(&self, source: &str) -> Result<()> {
        self.model.validate(source)?;
        self.check_counts(source)?;
        self.check_batch_and_schedule(source)?;
        self.check_data(source)?;
        if self.eval.val_tokens < self.model.seq_len {
            return Err(err(
                source,
                "eval.val_tokens",
                format!(
                    "{} is less than one sequence (model.seq_len = {})",
                    self.eval.val_tokens, self.model.seq_len
                ),
            ));
        }
        self.check_optimizer(source)
    }

    /// Step counts and sizes that must be positive, intervals that must not be negative,
    /// and a checkpoint retention that means something.
    fn check_counts(&self, source: &str) -> Result<()> {
        let positive: [(&str, i64); 5] = [
            ("schedule.steps", self.schedule.steps),
            ("batch.global_batch", self.batch.global_batch),
            ("batch.micro_batch", self.batch.micro_batch),
            ("batch.devices", self.batch.devices),
            ("batch.ranks", self.batch.ranks),
        ];
        for (key, v) in positive {
            if v <= 0 {
                return Err(err(source, key, format!("must be at least 1, found {v}")));
            }
        }
        let non_negative: [(&str, i64); 8] = [
            ("schedule.warmup", self.schedule.warmup),
            ("schedule.warmdown", self.schedule.warmdown),
            ("eval.val_every", self.eval.val_every),
            ("checkpoint_every", self.checkpoint_every),
            ("checkpoint_keep_last", self.checkpoint_keep_last),
            ("checkpoint_keep_every", self.checkpoint_keep_every),
            ("coconut.every", self.coconut.every),
            ("log_every", self.log_every),
        ];
        for (key, v) in non_negative {
            if v < 0 {
                return Err(err(source, key, format!("must be 0 or more, found {v}")));
            }
        }
        if self.checkpoint_keep_every > 0 && self.checkpoint_keep_last == 0 {
            return Err(err(
                source,
                "checkpoint_keep_every",
                format!(
                    "{} has no effect while checkpoint_keep_last = 0 keeps every checkpoint: set checkpoint_keep_last = N too (keep the newest N, and every {}-th step)",
                    self.checkpoint_keep_every, self.checkpoint_keep_every
                ),
            ));
        }
        Ok(())
    }

    /// Either the embedded corpus or both shard globs.
    fn check_data(&self, source: &str) -> Result<()> {
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
        Ok(())
    }

    /// Learning rates, decay, eps, momentum and betas in the ranges the optimizers need.
    fn check_optimizer(&self, source: &str) -> Result<()> {
        let o = &self.optimizer;
        if o.muon.ns_steps < 1 {
            return Err(err(
                source,
                "optimizer.muon.ns_steps",
                format!("must be at least 1, found {}", o.muon.ns_steps),
            ));
        }
        for (key, v) in [
            ("optimizer.adamw.lr", o.adamw.lr),
            ("optimizer.muon.lr", o.muon.lr),
            ("optimizer.adamw.weight_decay", o.adamw.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(err(
                    source,
                    key,
                    format!("must be a finite number >= 0, found {v}"),
                ));
            }
        }
        if !(o.adamw.eps.is_finite() && o.adamw.eps > 0.0) {
            return Err(err(
                source,
                "optimizer.adamw.eps",
                format!(
                    "must be a finite number > 0 (it keeps the update finite), found {}",
                    o.adamw.eps
                ),
            ));
        }
        if !(0.0..1.0).contains(&o.muon.momentum) {
            return Err(err(
                source,
                "optimizer.muon.momentum",
                format!("{} must be in [0, 1)", o.muon.momentum),
            ));
        }
        for (i, beta) in o.adamw.betas.iter().enumerate() {
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
}
