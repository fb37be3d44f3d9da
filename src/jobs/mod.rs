//! The contract between the lab, the sweep and the queue and the `stacklab` processes they
//! start: typed requests that build the child's command line ([`request`]), the one place a
//! `stacklab` child is started ([`spawn`]), a running child read as typed events
//! ([`child`]), and the typed reports that come back ([`decode_report`]).
//!
//! Every `stack`, `inspect` and `train` the lab, a sweep or the queue starts goes through
//! here; nothing else builds their argv or parses their output.

pub mod child;
pub mod request;
pub mod spawn;

pub use child::{ChildEvent, Job, Outcome, Wake};
pub use request::{HealRequest, InspectRequest, StackRequest, TrainRequest};
pub use spawn::stacklab_exe;

use anyhow::{Context, Result};

/// Reads a child's report: the JSON object a `--json` command prints as its last line.
pub fn decode_report<T: serde::de::DeserializeOwned>(stdout: &str, what: &str) -> Result<T> {
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("{what} printed no readable report"))
}
