//! Upper bounds on a config's sizes, computed in `i128` so no product of user-given numbers
//! can overflow: what a model, one micro-batch and one optimizer step may hold. Values past
//! them cannot be allocated on any machine stacklab trains on, so they are refused with the
//! key named and the limit stated, before anything is created or allocated.

use anyhow::Result;

use super::keys::err;
use super::{ModelConfig, TrainConfig};

/// Parameters a model may have: weights, gradients and optimizer state take about 16 bytes
/// each, so 2^36 parameters are 1 TiB.
pub const MAX_PARAMETERS: i128 = 1 << 36;
/// `micro_batch x seq_len x n_embd x n_layer`: the activations one micro-batch keeps for
/// the backward pass (tens of bytes each, so 2^34 of them are about 1 TiB).
pub const MAX_ACTIVATIONS: i128 = 1 << 34;
/// Tokens of one optimizer step (`global_batch x seq_len`): a step's tokens are read into
/// memory, two steps ahead, as int64 inputs and targets (16 bytes each: 2^30 are 16 GiB).
pub const MAX_STEP_TOKENS: i128 = 1 << 30;
/// Micro-batches of one optimizer step (`global_batch / (micro_batch x devices)`).
pub const MAX_MICRO_BATCHES: i128 = 1 << 16;

/// `n` with thousands separators, for limits a user reads.
pub(super) fn thousands(n: i128) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `vocab_size x n_embd + n_layer x 12 x n_embd^2`: the embedding/lm-head matrix `W` and
/// each block's attention (4 n_embd^2) and MLP (8 n_embd^2) matrices.
/// Saturates at `i128::MAX` (shown as "more than 10^38").
pub fn parameter_count(m: &ModelConfig) -> i128 {
    let (v, l, c) = (m.vocab_size as i128, m.n_layer as i128, m.n_embd as i128);
    (v * c).saturating_add(l.saturating_mul(12 * c).saturating_mul(c))
}

/// `seq_len x n_embd x n_layer`: the activations one sequence keeps (saturating).
fn per_sequence(m: &ModelConfig) -> i128 {
    (m.seq_len as i128 * m.n_embd as i128).saturating_mul(m.n_layer as i128)
}

/// A count for a message: exact with separators, or "more than 10^38" when saturated.
fn count(n: i128) -> String {
    if n == i128::MAX {
        "more than 10^38".into()
    } else {
        thousands(n)
    }
}

impl ModelConfig {
    /// The model's size and one sequence's activations against [`MAX_PARAMETERS`] and
    /// [`MAX_ACTIVATIONS`]; the shape rules (positive sizes) have passed.
    pub(super) fn check_size(&self, source: &str) -> Result<()> {
        let m = self;
        let params = parameter_count(m);
        if params > MAX_PARAMETERS {
            let (v, c) = (m.vocab_size as i128, m.n_embd as i128);
            let one_layer = (v * c).saturating_add((12 * c).saturating_mul(c));
            let key = if one_layer <= MAX_PARAMETERS {
                "model.n_layer"
            } else if v > c && v * c > MAX_PARAMETERS {
                "model.vocab_size"
            } else {
                "model.n_embd"
            };
            return Err(err(
                source,
                key,
                format!(
                    "model.vocab_size x model.n_embd + model.n_layer x 12 x model.n_embd^2 = {} x {} + {} x 12 x {}^2 = {} parameters; at most {} (2^36) fit (about 16 bytes each with gradients and optimizer state, 1 TiB)",
                    m.vocab_size,
                    m.n_embd,
                    m.n_layer,
                    m.n_embd,
                    count(params),
                    thousands(MAX_PARAMETERS)
                ),
            ));
        }
        let per_sequence = per_sequence(m);
        if per_sequence > MAX_ACTIVATIONS {
            return Err(err(
                source,
                "model.seq_len",
                format!(
                    "one sequence of {} tokens through {} layers of width {} keeps {} activations; at most {} (2^34) fit: model.seq_len {} or less fits this model",
                    m.seq_len,
                    m.n_layer,
                    m.n_embd,
                    count(per_sequence),
                    thousands(MAX_ACTIVATIONS),
                    thousands(MAX_ACTIVATIONS / (m.n_embd as i128 * m.n_layer as i128))
                ),
            ));
        }
        Ok(())
    }

    /// Why a micro-batch of `batch` sequences does not fit [`MAX_ACTIVATIONS`], if it does
    /// not (the caller names the key or flag that set `batch`).
    pub fn micro_batch_too_big(&self, batch: i64) -> Option<String> {
        let per_sequence = per_sequence(self);
        let total = (batch as i128).saturating_mul(per_sequence);
        (total > MAX_ACTIVATIONS).then(|| {
            format!(
                "{batch} sequences x model.seq_len x model.n_embd x model.n_layer = {batch} x {} x {} x {} = {} activations per micro-batch; at most {} (2^34) fit: {} or fewer sequences fit",
                self.seq_len,
                self.n_embd,
                self.n_layer,
                count(total),
                thousands(MAX_ACTIVATIONS),
                thousands(MAX_ACTIVATIONS / per_sequence.max(1))
            )
        })
    }
}

impl TrainConfig {
    /// The batch's divisibility and sizes, and the schedule's sums, in exact arithmetic.
    pub(super) fn check_batch_and_schedule(&self, source: &str) -> Result<()> {
        self.check_batch_division(source)?;
        let step_tokens = self.check_step_size(source)?;
        self.check_schedule(source, step_tokens)
    }

    /// The global batch splits into whole micro-batches for every device and emulated
    /// rank, and not into more than a step can count.
    fn check_batch_division(&self, source: &str) -> Result<()> {
        let b = &self.batch;
        let (global, micro, devices, ranks) = (
            b.global_batch as i128,
            b.micro_batch as i128,
            b.devices as i128,
            b.ranks as i128,
        );
        let per_pass = micro * devices;
        if global % per_pass != 0 {
            return Err(err(
                source,
                "batch.global_batch",
                format!(
                    "{} sequences is not divisible by batch.micro_batch x batch.devices = {} x {} = {per_pass}",
                    b.global_batch, b.micro_batch, b.devices
                ),
            ));
        }
        // per_pass <= global here, so this product stays far inside i128.
        if global % (ranks * per_pass) != 0 {
            return Err(err(
                source,
                "batch.ranks",
                format!(
                    "batch.global_batch = {} is not divisible by batch.ranks x batch.micro_batch = {} x {} = {}: each emulated rank reads whole micro-batches (batch.ranks = 1 reads the shards as one stream)",
                    b.global_batch,
                    b.ranks,
                    b.micro_batch,
                    ranks * per_pass
                ),
            ));
        }
        let micro_batches = global / per_pass;
        if micro_batches > MAX_MICRO_BATCHES {
            return Err(err(
                source,
                "batch.global_batch",
                format!(
                    "{} / (batch.micro_batch x batch.devices = {per_pass}) = {} micro-batches a step; at most {} (2^16) fit: raise batch.micro_batch or lower batch.global_batch",
                    b.global_batch,
                    thousands(micro_batches),
                    thousands(MAX_MICRO_BATCHES)
                ),
            ));
        }
        Ok(())
    }

    /// A step's tokens and one micro-batch fit; the tokens a step reads.
    fn check_step_size(&self, source: &str) -> Result<i128> {
        let (b, m) = (&self.batch, &self.model);
        let global = b.global_batch as i128;
        let step_tokens = global * m.seq_len as i128;
        if step_tokens > MAX_STEP_TOKENS {
            return Err(err(
                source,
                "batch.global_batch",
                format!(
                    "{} sequences x model.seq_len = {} is {} tokens a step; at most {} (2^30) fit: batch.global_batch {} or less fits",
                    b.global_batch,
                    m.seq_len,
                    thousands(step_tokens),
                    thousands(MAX_STEP_TOKENS),
                    thousands(MAX_STEP_TOKENS / m.seq_len as i128)
                ),
            ));
        }
        if let Some(why) = m.micro_batch_too_big(b.micro_batch) {
            return Err(err(source, "batch.micro_batch", why));
        }
        Ok(step_tokens)
    }

    /// Warm-up and warm-down fit in the steps, and the run's token count fits an i64.
    fn check_schedule(&self, source: &str, step_tokens: i128) -> Result<()> {
        let s = &self.schedule;
        if s.warmdown > s.steps {
            return Err(err(
                source,
                "schedule.warmdown",
                format!("{} is more than schedule.steps = {}", s.warmdown, s.steps),
            ));
        }
        if s.warmup as i128 + s.warmdown as i128 > s.steps as i128 {
            return Err(err(
                source,
                "schedule.warmup",
                format!(
                    "warmup {} + warmdown {} is more than schedule.steps = {}",
                    s.warmup, s.warmdown, s.steps
                ),
            ));
        }
        // The run counts the tokens it has seen in an i64.
        if s.steps as i128 * step_tokens > i64::MAX as i128 {
            return Err(err(
                source,
                "schedule.steps",
                format!(
                    "{} steps of {} tokens are more tokens than a run can count (2^63 - 1); at most {} steps fit",
                    s.steps,
                    thousands(step_tokens),
                    thousands(i64::MAX as i128 / step_tokens)
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "[model]\nvocab_size = 4096\nn_layer = 4\nn_head = 4\nn_embd = 128\nseq_len = 128\n[schedule]\nsteps = 300\nwarmdown = 90\n[batch]\nglobal_batch = 32\nmicro_batch = 16\nranks = 1\n[data]\nembedded = true\ntrain = \"\"\nval = \"\"\n[eval]\nval_tokens = 4096\n";

    fn refused(sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        TrainConfig::from_toml_str(TINY, "t.toml", &sets)
            .expect_err("the config is refused")
            .to_string()
    }

    #[test]
    fn sizes_that_overflow_or_cannot_be_allocated_are_refused_by_key() {
        TrainConfig::from_toml_str(TINY, "t.toml", &[]).unwrap();
        let cases: &[(&[&str], &str)] = &[
            // i64 products that wrap to 0 made `%` panic.
            (
                &["batch.micro_batch=4294967296", "batch.devices=4294967296"],
                "`batch.global_batch`: 32 sequences is not divisible by batch.micro_batch x batch.devices = 4294967296 x 4294967296 = 18446744073709551616",
            ),
            (
                &[
                    "batch.global_batch=4611686018427387904",
                    "batch.micro_batch=2147483648",
                    "batch.ranks=8589934592",
                ],
                "`batch.ranks`: batch.global_batch = 4611686018427387904 is not divisible by batch.ranks x batch.micro_batch = 8589934592 x 2147483648 = 18446744073709551616",
            ),
            (
                &["batch.ranks=4294967295"],
                "`batch.ranks`: batch.global_batch = 32 is not divisible",
            ),
            // The sum wrapped negative and passed.
            (
                &["schedule.warmup=9223372036854775807", "schedule.warmdown=10"],
                "`schedule.warmup`: warmup 9223372036854775807 + warmdown 10 is more than schedule.steps = 300",
            ),
            (
                &["batch.global_batch=4294967295", "batch.micro_batch=1"],
                "`batch.global_batch`: 4294967295 / (batch.micro_batch x batch.devices = 1) = 4,294,967,295 micro-batches a step; at most 65,536",
            ),
            (
                &["batch.global_batch=16777216", "batch.micro_batch=1024"],
                "`batch.global_batch`: 16777216 sequences x model.seq_len = 128 is 2,147,483,648 tokens a step; at most 1,073,741,824 (2^30) fit: batch.global_batch 8,388,608 or less fits",
            ),
            (
                &["batch.global_batch=8388608", "batch.micro_batch=8388608"],
                "`batch.micro_batch`: 8388608 sequences x model.seq_len x model.n_embd x model.n_layer = 8388608 x 128 x 128 x 4 = 549,755,813,888 activations per micro-batch; at most 17,179,869,184 (2^34) fit: 262,144 or fewer",
            ),
            (
                &["model.n_embd=4294967296"],
                "`model.n_embd`: model.vocab_size x model.n_embd + model.n_layer x 12 x model.n_embd^2 = 4096 x 4294967296 + 4 x 12 x 4294967296^2 = 885,443,733,130,244,521,984 parameters; at most 68,719,476,736 (2^36) fit",
            ),
            (
                &["model.n_embd=9223372036854775806", "model.n_head=1"],
                "`model.n_embd`: model.vocab_size x model.n_embd + model.n_layer x 12 x model.n_embd^2 = 4096 x 9223372036854775806 + 4 x 12 x 9223372036854775806^2 = more than 10^38 parameters",
            ),
            (
                &["model.n_layer=100000000"],
                "`model.n_layer`: model.vocab_size x model.n_embd + model.n_layer x 12 x model.n_embd^2 = 4096 x 128 + 100000000 x 12 x 128^2 = 19,660,800,524,288 parameters",
            ),
            (
                &["model.seq_len=1099511627776", "eval.val_tokens=1099511627776"],
                "`model.seq_len`: one sequence of 1099511627776 tokens through 4 layers of width 128 keeps 562,949,953,421,312 activations; at most 17,179,869,184 (2^34) fit: model.seq_len 33,554,432 or less fits this model",
            ),
            (
                &["schedule.steps=9223372036854775807"],
                "`schedule.steps`: 9223372036854775807 steps of 4,096 tokens are more tokens than a run can count (2^63 - 1); at most 2,251,799,813,685,247 steps fit",
            ),
        ];
        for (sets, want) in cases {
            let e = refused(sets);
            assert!(e.contains(want), "{sets:?}: want {want:?}, got {e}");
        }
        // The largest values that fit are accepted.
        TrainConfig::from_toml_str(
            TINY,
            "t.toml",
            &[
                "batch.global_batch=8388608".into(),
                "batch.micro_batch=262144".into(),
            ],
        )
        .unwrap();
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(68_719_476_736), "68,719,476,736");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }

    #[test]
    fn the_parameter_count_is_that_of_the_model() {
        let tiny = ModelConfig {
            vocab_size: 4096,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            seq_len: 128,
            ..ModelConfig::default()
        };
        // What `train` prints for configs/tiny.toml.
        assert_eq!(parameter_count(&tiny), 1_310_720);
        let huge = ModelConfig {
            n_embd: i64::MAX,
            n_layer: i64::MAX,
            ..tiny
        };
        assert!(parameter_count(&huge) > MAX_PARAMETERS);
    }
}
