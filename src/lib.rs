//! stacklab: a terminal lab for model-stacking research on libtorch.
//!
//! Data flows one way: config -> data + model -> trainer -> run directory (metrics,
//! checkpoints) -> the lab and the headless commands that read them.

pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod doctor;
pub mod eval;
pub mod export;
pub mod filelock;
pub mod hash;
pub mod heal;
pub mod inspect;
pub mod jobs;
pub mod model;
pub mod paths;
pub mod progress;
pub mod runs;
pub mod stack;
pub mod sweep;
pub mod system;
pub mod train;
pub mod tui;
