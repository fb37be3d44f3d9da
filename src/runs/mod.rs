//! Run directories (config, metrics, status, log, checkpoints) and the checkpoint format.

pub mod catalog;
pub mod checkpoint;
pub mod process;
pub mod queue;
pub mod registry;
pub mod run_dir;

pub use checkpoint::{Checkpoint, CheckpointMeta, CheckpointRef};
pub use run_dir::{RunDir, RunState, RunStatus};
