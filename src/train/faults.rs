//! A training that ends abnormally, worded for a person. A panic inside the loop (libtorch
//! raises CUDA out-of-memory as one through tch) is caught at the loop's boundary and ends
//! the run `failed` with a message saying where it happened and, for out-of-memory, what to
//! lower; the run then ends like any other (final status, the next queued run starts).
//!
//! Test hook: `STACKLAB_FAULT_PANIC_AT_STEP=N` panics in the first micro-batch of step N, as
//! a libtorch error would; `N:oom` panics with libtorch's CUDA out-of-memory message.

use std::any::Any;

use crate::config::TrainConfig;

pub const PANIC_AT_STEP_ENV: &str = "STACKLAB_FAULT_PANIC_AT_STEP";

/// Where the training is, for a message about what went wrong there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// Loading the model, the data and the optimizer state.
    #[default]
    Setup,
    /// Forward and backward of micro-batch `micro` (from 1) of `of` in step `step`.
    MicroBatch { step: i64, micro: usize, of: usize },
    /// The optimizers' update of step `step`.
    Update { step: i64 },
    /// The validation after step `step` (0: before the first).
    Validation { step: i64 },
    /// Writing the checkpoint of step `step`.
    Checkpoint { step: i64 },
}

/// A panic's message (a `String` or `&str` payload).
pub fn payload_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The first meaningful line of a panic message. libtorch errors arrive as
/// ``called `Result::unwrap()` on an `Err` value: Torch("what happened\nException raised
/// from ... <C++ frames>")``, with the newlines escaped by `Debug`: keep "what happened".
pub fn short_message(payload: &str) -> String {
    let mut text = payload;
    if let Some(rest) = text.split_once("on an `Err` value: ").map(|(_, r)| r) {
        text = rest;
    }
    for wrapper in ["Torch(\"", "Torch(", "Shape(\"", "Kind(\""] {
        if let Some(rest) = text.strip_prefix(wrapper) {
            text = rest;
            break;
        }
    }
    let line = text
        .split("\\n")
        .flat_map(|l| l.split('\n'))
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.trim_end_matches(['"', ')']).to_string()
}

/// Whether a libtorch error says the device ran out of memory (the caching allocator's
/// "CUDA out of memory", cuBLAS failing to allocate its workspace, the driver's own code).
pub fn is_out_of_memory(text: &str) -> bool {
    crate::device::is_out_of_memory(text)
}

/// The failed run's message for a panic at `stage`.
pub fn describe_panic(text: &str, stage: Stage, cfg: &TrainConfig) -> String {
    let first = short_message(text);
    let (b, t) = (cfg.batch.micro_batch, cfg.model.seq_len);
    if !is_out_of_memory(text) {
        let at = match stage {
            Stage::Setup => "while setting up the run".to_string(),
            Stage::MicroBatch { step, micro, of } => {
                format!("in step {step}, micro-batch {micro} of {of}")
            }
            Stage::Update { step } => format!("in the optimizer update of step {step}"),
            Stage::Validation { step } => format!("in the validation after step {step}"),
            Stage::Checkpoint { step } => format!("while writing the checkpoint of step {step}"),
        };
        return format!("internal error {at}: {first}");
    }
    let lower_batch = format!(
        "lower batch.micro_batch (now {b}; batch.global_batch = {} stays, reached by more accumulation), or model.seq_len ({t}) or the model's size",
        cfg.batch.global_batch
    );
    match stage {
        Stage::MicroBatch { step, micro, of } => format!(
            "the device ran out of memory in step {step}, micro-batch {micro} of {of} ({b} sequences of {t} tokens): {lower_batch} ({first})"
        ),
        Stage::Validation { step } => format!(
            "the device ran out of memory in the validation after step {step} (batches of {b} sequences of {t} tokens): {lower_batch} ({first})"
        ),
        Stage::Update { step } => format!(
            "the device ran out of memory in the optimizer update of step {step}: the weights and optimizer state do not fit beside the activations; lower the model's size or free the device (other processes on it) ({first})"
        ),
        Stage::Checkpoint { step } => format!(
            "the device ran out of memory while writing the checkpoint of step {step}: free the device (other processes on it) or {lower_batch} ({first})"
        ),
        Stage::Setup => format!(
            "the device ran out of memory while loading the run: the model and its optimizer state do not fit; lower the model's size or free the device ({first})"
        ),
    }
}

/// The fault `STACKLAB_FAULT_PANIC_AT_STEP` asks for, if set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PanicHook {
    pub step: i64,
    pub out_of_memory: bool,
}

impl PanicHook {
    pub fn from_env() -> Option<PanicHook> {
        let v = std::env::var(PANIC_AT_STEP_ENV).ok()?;
        let (step, kind) = v.split_once(':').unwrap_or((&v, ""));
        Some(PanicHook {
            step: step.trim().parse().ok()?,
            out_of_memory: kind.trim() == "oom",
        })
    }

    /// Panics when `step` is the hook's, as libtorch would.
    pub fn fire(&self, step: i64) {
        if step != self.step {
            return;
        }
        if self.out_of_memory {
            panic!(
                "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB (injected by {PANIC_AT_STEP_ENV}={step}:oom)\\nException raised from malloc\")"
            );
        }
        panic!("injected fault: {PANIC_AT_STEP_ENV}={step}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tch_error_is_cut_to_its_first_line() {
        let payload = "called `Result::unwrap()` on an `Err` value: Torch(\"shape '[2, 32, 64, 1]' is invalid for input of size 4096\\nException raised from infer_size_impl at /pytorch/aten/src/ATen/InferSize.h:42 (most recent call first):\\nframe #0: c10::Error::Error(...)\")";
        assert_eq!(
            short_message(payload),
            "shape '[2, 32, 64, 1]' is invalid for input of size 4096"
        );
        assert_eq!(
            short_message("index out of bounds\nmore"),
            "index out of bounds"
        );
        assert_eq!(short_message(""), "");
    }

    #[test]
    fn out_of_memory_says_which_batch_and_what_to_lower() {
        let cfg = TrainConfig::default();
        for text in [
            "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 79.1 GiB\\nException raised from malloc\")",
            "Torch(\"CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`\")",
        ] {
            let stage = Stage::MicroBatch {
                step: 7,
                micro: 3,
                of: 8,
            };
            let m = describe_panic(text, stage, &cfg);
            assert!(
                m.starts_with("the device ran out of memory in step 7, micro-batch 3 of 8 (")
                    && m.contains("lower batch.micro_batch (now ")
                    && !m.contains("Exception raised"),
                "{m}"
            );
            let v = describe_panic(text, Stage::Validation { step: 10 }, &cfg);
            assert!(v.contains("in the validation after step 10"), "{v}");
        }
        let other = describe_panic(
            "index out of bounds: the len is 3 but the index is 5",
            Stage::Checkpoint { step: 4 },
            &cfg,
        );
        assert_eq!(
            other,
            "internal error while writing the checkpoint of step 4: index out of bounds: the len is 3 but the index is 5"
        );
    }

    #[test]
    fn the_hook_fires_at_its_step_only() {
        let hook = PanicHook {
            step: 2,
            out_of_memory: true,
        };
        hook.fire(1);
        let p = std::panic::catch_unwind(|| hook.fire(2)).unwrap_err();
        let text = payload_text(p.as_ref());
        assert!(is_out_of_memory(&text), "{text}");
    }
}
