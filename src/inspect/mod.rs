//! Inspecting a stack at its seams: residual norms per point (histograms on shared log10
//! bins), the logit lens, linear CKA (biased and debiased), stitching, and the seed's latent
//! metrics. The README's "Inspect" section states every definition.

pub mod attribution;
pub mod cka;
mod collect;
pub mod input;
mod latent;
pub mod lens;
mod measure;
pub mod norms;
pub mod plot;
pub mod report;
pub mod run;
mod seam;
pub mod stack;
pub mod stitch;

pub use input::{InspectInput, InspectOptions, PartInput};
pub use report::InspectReport;
pub use run::inspect;
