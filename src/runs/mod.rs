//! Run directories (config, metrics, status, log, checkpoints) and the checkpoint format.

pub mod catalog;
pub mod checkpoint;
pub mod control;
pub mod disk;
pub mod gpu_use;
pub mod launch;
pub mod listing;
pub mod lock;
pub mod process;
pub mod queue;
pub mod registry;
pub mod retention;
pub mod run_dir;

pub use checkpoint::{Checkpoint, CheckpointMeta, CheckpointRef};
pub use run_dir::{RunDir, RunState, RunStatus};
