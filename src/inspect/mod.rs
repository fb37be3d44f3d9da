//! Inspecting a stack at its seams: residual norms per point (histograms on shared log10
//! bins), the logit lens, linear CKA (biased and debiased), stitching, the seed's latent
//! metrics, and `--scan` over every cut of two models. The README's "Inspect" section
//! states every definition.

pub mod attribution;
pub mod cka;
mod collect;
pub mod input;
mod latent;
pub mod lens;
mod measure;
pub mod norms;
pub mod plot;
pub mod plot_scan;
pub mod report;
pub mod run;
pub mod scan;
mod seam;
pub mod stack;
pub mod stitch;

pub use input::{InspectInput, InspectOptions, PartInput};
pub use report::InspectReport;
pub use run::{inspect, inspect_with_scan};
