//! Stacks: what a stack is (models, half-open block ranges, boundary norms), assembling one
//! from checkpoints, scoring it beside its parts in one pass, caching the parts' losses,
//! and the results a researcher keeps.

pub mod assemble;
pub mod cache;
pub mod identity;
pub mod results;
pub mod row;
pub mod score;
pub mod selection;
pub mod spec;

pub use assemble::{assemble, PartView, Stack};
pub use score::{score, ScoreOptions};
pub use selection::{prepare, EvalOptions, Prepared};
pub use spec::{BlockRange, Layers, StackNorms, StackSpec};
