//! The contract between the lab, the sweep and the queue and the `stacklab` processes they
//! start: typed requests that build the child's command line ([`request`]), the one place a
//! `stacklab` child is started ([`spawn`]), a running child read as typed events
//! ([`child`]), and the typed reports that come back ([`decode_report`]).
//!
//! Every `stack`, `inspect` and `train` the lab, a sweep or the queue starts goes through
//! here; nothing else builds their argv or parses their output.

pub mod child;
pub mod ranks;
pub mod request;
pub mod spawn;

pub use child::{ChildEvent, Job, Outcome, Wake};
pub use request::{HealRequest, InspectRequest, StackRequest, TrainRequest};
pub use spawn::stacklab_exe;

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Reads a child's report: the JSON object a `--json` command prints as its last line.
pub fn decode_report<T: serde::de::DeserializeOwned>(stdout: &str, what: &str) -> Result<T> {
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("{what} printed no readable report"))
}

/// Runs a `train` request to its end as a child in this process's group (a Ctrl-C reaches
/// it too: it checkpoints and ends), its output appended to `log`. `name` names the run
/// and `again` the command to run again, in the errors.
pub fn run_training(req: &TrainRequest, name: &str, log: &Path, again: &str) -> Result<()> {
    let exe = stacklab_exe()?;
    let status = spawn::run_logged(
        &spawn::Spec {
            program: &exe,
            args: &req.to_args(),
            env: &req.env(),
        },
        log,
    )?;
    if spawn::interrupted(&status) {
        bail!("interrupted while training {name}; run the same {again} again to resume");
    }
    if !status.success() {
        bail!(
            "training {name} failed (see {}); fix it and run the same {again} again to resume it",
            log.display()
        );
    }
    Ok(())
}
