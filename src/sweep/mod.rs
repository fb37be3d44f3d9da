//! Sweeps: the seed's whole experiment (train the models, evaluate the stack grid) as one
//! resumable command, with tables computed from the raw result rows.

pub mod columns;
pub mod config;
pub mod plan;
pub mod run;
pub mod seed_rows;
pub mod tables;
