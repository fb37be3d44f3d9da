//! Sweeps: the seed's whole experiment (train the models, evaluate the stack grid) as one
//! resumable command, with tables computed from the raw result rows.

pub mod seed_rows;
pub mod tables;
