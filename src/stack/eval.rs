//! One pass over the val tokens for several models: each batch is read once and every model
//! scores it, so the stack and its parts are compared on exactly the same tokens.

use std::io::IsTerminal;

use anyhow::Result;
use tch::Device;

use crate::data::ShardLoader;
pub use crate::eval::Scores;
use crate::eval::{evaluate_many, LanguageModel};

/// [`evaluate_many`] with a progress bar on stderr when it is a terminal.
pub fn evaluate_together(
    models: &[&dyn LanguageModel],
    loader: &mut ShardLoader,
    tokens: i64,
    device: Device,
) -> Result<Scores> {
    evaluate_many(
        models,
        loader,
        tokens,
        device,
        std::io::stderr().is_terminal(),
    )
}
