//! The lab: a terminal application. This first screen shows what the lab will work on.

use anyhow::{bail, Result};

pub fn run(_device: &str) -> Result<()> {
    bail!("the lab is not built yet")
}
