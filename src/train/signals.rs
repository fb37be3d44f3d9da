//! SIGINT and SIGTERM end a training gracefully: the loop sees the flag between steps,
//! checkpoints and stops. A second signal while the first is handled ends the process.
//!
//! A terminal that goes away ends nothing: SIGHUP (a closed terminal, a dropped SSH link) is
//! ignored, and so is SIGPIPE, so a write to a closed pipe fails (and is ignored by the
//! reporter) instead of killing the process; the run's own files keep everything.

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

/// Ignores SIGHUP and SIGPIPE for the rest of the process (see the module's note).
pub fn outlive_the_terminal() {
    for sig in [libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: setting a signal's disposition to "ignore" has no memory effects.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}
