//! Training: Muon for the block matrices, AdamW for `W`, the seed's schedule, gradient
//! accumulation, COCONUT-parallel steps, and the loop that writes a run directory.

pub mod adamw;
pub mod coconut;
pub mod muon;
pub mod schedule;
pub mod trainer;

pub use adamw::AdamW;
pub use muon::Muon;
pub use schedule::lr_factor;
pub use trainer::{apply_optimizers, muon_kind, muon_params, train, TrainOptions, TrainOutcome};
