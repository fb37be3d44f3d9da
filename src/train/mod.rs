//! Training: Muon for the block matrices, AdamW for `W`, the seed's schedule, gradient
//! accumulation over the emulated ranks' micro-batches, COCONUT-parallel steps, and the
//! loop that writes a run directory.

pub mod adamw;
pub mod checkpointing;
pub mod coconut;
pub mod faults;
pub mod muon;
pub mod parallel;
pub mod reporter;
pub mod schedule;
pub mod setup;
pub mod signals;
pub mod step;
pub mod trainer;

pub use adamw::AdamW;
pub use muon::Muon;
pub use reporter::format_duration;
pub use schedule::lr_factor;
pub use setup::{muon_kind, TrainOptions};
pub use step::apply_optimizers;
pub use trainer::{train, TrainOutcome};
