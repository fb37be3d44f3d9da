//! What an inspection takes: the assembled stack, each part's model alone, and the options.

use tch::Device;

use crate::config::NormKind;
use crate::model::{Compute, Gpt};

/// One part of the stack, and the model it comes from run alone.
pub struct PartInput {
    pub label: String,
    pub path: String,
    /// The model alone, with the norms it was trained with.
    pub model: Gpt,
    /// The half-open block range the stack takes.
    pub start: i64,
    pub end: i64,
}

pub struct InspectInput {
    /// The assembled stack (its blocks' `pre_norm` at the seams, the stack's outer norms).
    pub stack: Gpt,
    pub parts: Vec<PartInput>,
    pub norm_inter_model: NormKind,
}

pub struct InspectOptions {
    pub tokens: i64,
    pub batch: usize,
    pub stitch_steps: i64,
    pub stitch_lr: f64,
    pub hist_bins: usize,
    pub device: Device,
}

/// Inspections compute in fp32.
pub(super) const C: Compute = Compute::Fp32;
