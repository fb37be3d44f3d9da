//! SIGINT and SIGTERM end a training gracefully: the loop sees the flag between steps,
//! checkpoints and stops. A second signal while the first is handled ends the process.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;

/// Installs the handlers; the flag turns true on the first SIGINT or SIGTERM.
pub fn install_stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}
