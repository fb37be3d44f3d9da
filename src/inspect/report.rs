//! The report `stacklab inspect --json` prints (schema `stacklab.inspect/1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::attribution::ParentShare;
use super::lens::LensSummary;
use super::norms::{CosSummary, Percentiles};

pub const SCHEMA: &str = "stacklab.inspect/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockRef {
    /// The part's model label (`m1`, `m2`, ...).
    pub model: String,
    /// The block's index in its own model.
    pub block: i64,
    pub attn_scale: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointReport {
    pub r: usize,
    /// The model whose block produced this point (`embedding` at r = 0).
    pub model: String,
    /// That block's index in its own model (none at r = 0).
    pub block: Option<i64>,
    pub rms: Percentiles,
    /// Mean RMS at position 0 of the sequences (left out of `rms` and `hist`).
    pub rms_pos0: f64,
    pub hist: Vec<u64>,
    pub update_ratio: Option<f64>,
    pub cos_prev: Option<CosSummary>,
    pub lens: LensSummary,
    /// At a stack's points: which part's own prediction the lens follows (one entry per
    /// part, in order). Empty at a part's own points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attribution: Vec<ParentShare>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartReport {
    pub model: String,
    pub path: String,
    /// The half-open block range the stack takes from this model.
    pub range: [i64; 2],
    /// The model alone, with the norms it was trained with.
    pub norm_wte: String,
    pub norm_lm_head: String,
    pub val_loss: f64,
    pub points: Vec<PointReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StitchReport {
    /// The stack as it is (with its boundary norm).
    pub none: f64,
    /// The arriving residual passed on unchanged (no boundary norm).
    pub identity: f64,
    /// The least-squares affine map, fitted on train tokens.
    pub lstsq: f64,
    /// The map trained on the language-modelling loss (with `--stitch STEPS`).
    pub trained: Option<f64>,
    /// The upper model alone on the same tokens.
    pub upper_model: f64,
    /// The stitched loss on the probe of the map chosen on the held-out train slice
    /// (`chosen`), minus `upper_model`.
    pub penalty: f64,
    /// Which map `penalty` uses: `lstsq` or `trained`, whichever is lower on `heldout`
    /// (never chosen on the probe it is scored on).
    #[serde(default)]
    pub chosen: String,
    /// Each map's loss on the train tokens it was fitted on.
    #[serde(default)]
    pub fit: StitchLosses,
    /// Each map's loss on a held-out slice of the train tokens (read after `fit_tokens`).
    #[serde(default)]
    pub heldout: StitchLosses,
    /// Train tokens the maps were fitted on (least squares leaves out position 0 of each
    /// sequence, as RMS and CKA do).
    pub fit_tokens: usize,
    #[serde(default)]
    pub heldout_tokens: usize,
    pub trained_steps: i64,
}

/// One seam's stitched losses on one set of tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StitchLosses {
    pub identity: f64,
    pub lstsq: f64,
    pub trained: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeamReport {
    /// Stack blocks below the seam (the stack's residual point where the upper part reads).
    pub after_block: usize,
    pub lower: String,
    pub upper: String,
    /// The upper part's first kept block in its own model: its point `upper_start` is what
    /// that block expects.
    pub upper_start: i64,
    pub rms_received: f64,
    pub rms_expected: f64,
    pub rms_ratio: f64,
    pub cos_to_expected: f64,
    pub cos_to_expected_p05: f64,
    pub cos_to_expected_p50: f64,
    pub cka: f64,
    pub cka_debiased: f64,
    pub cka_n_tokens: usize,
    /// Rows: the stack's points `cka_rows` (the lower part); columns: the upper model's own
    /// points `0..=depth`. Biased linear CKA.
    pub cka_matrix: Vec<Vec<f64>>,
    pub cka_rows: Vec<usize>,
    /// The upper model's point most like what arrives (biased CKA).
    pub best_match_point: usize,
    pub stitch: StitchReport,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ActivationStats {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// The seed's `--latent-metrics`, working: per model, activations at `in` (after
/// norm_wte), `first` (after block 0), `last` (input of the last block, norm_lm_head
/// applied) and `out` (after the last block and norm_lm_head), and mean per-token cosine
/// similarities within and across models.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LatentReport {
    pub tokens: usize,
    pub stats: BTreeMap<String, BTreeMap<String, ActivationStats>>,
    pub cosine: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectReport {
    pub schema: String,
    pub tokens: i64,
    pub seq_len: i64,
    pub blocks: Vec<BlockRef>,
    pub norm_wte: String,
    pub norm_lm_head: String,
    pub norm_inter_model: String,
    pub val_loss_stack: f64,
    pub points: Vec<PointReport>,
    pub hist_edges_log10: Vec<f64>,
    pub parts: Vec<PartReport>,
    pub seams: Vec<SeamReport>,
    pub latent: LatentReport,
    pub notes: Vec<String>,
    pub seconds: f64,
    /// `--scan`: every cut of the two models (reports without it still read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanReport>,
}

/// One cut of `--scan`: the stack `A[0, exit) + B[entry, L_B)` (`--ranges 0:exit,entry:L_B`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanCell {
    /// A's point the stack leaves A at (after block `exit - 1`), 1..=L_A.
    pub exit: usize,
    /// B's point the stack enters B at (the input of its block `entry`), 0..L_B.
    pub entry: usize,
    /// Mean RMS of what arrives (after the boundary norm) over mean RMS of B's own point.
    pub rms_ratio: f64,
    /// Mean per-token cosine between what arrives and B's own point.
    pub cos: f64,
    pub cka_debiased: f64,
    /// Mean per-token `arccos(cos) / pi` (Gromov et al. 2024): 0 same direction, 1 opposite.
    pub angular_distance: f64,
    /// The stack's probe loss as it is.
    pub loss: f64,
    /// The probe loss with the least-squares map fitted on train tokens in place of the
    /// boundary norm.
    pub loss_stitched: f64,
}

/// The seed's two flags, for a cut they build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFlags {
    pub use_first_layer: bool,
    pub use_last_layer: bool,
}

/// The lowest cell of `--scan` by one loss, and what builds that stack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanBest {
    pub exit: usize,
    pub entry: usize,
    pub loss: f64,
    /// `--ranges` of that stack: `0:exit,entry:L_B`.
    pub ranges: String,
    /// The seed's flags when they build the same stack, else none.
    pub flags: Option<ScanFlags>,
}

/// `--scan`: every exit point of the lower model against every entry point of the upper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanReport {
    pub lower: String,
    pub upper: String,
    pub lower_blocks: usize,
    pub upper_blocks: usize,
    /// The cut the seed's defaults build (no `use_first_layer`, no `use_last_layer`):
    /// `[L_A - 1, 1]`, none when a model has a single block.
    pub default_cut: Option<[usize; 2]>,
    /// Train tokens the least-squares maps were fitted on.
    pub fit_tokens: usize,
    /// Probe tokens (position 0 left out) the measures are taken over.
    pub n_tokens: usize,
    /// Row-major: exit 1..=L_A, entry 0..L_B within each exit.
    pub cells: Vec<ScanCell>,
    pub best: ScanBest,
    pub best_stitched: ScanBest,
}
