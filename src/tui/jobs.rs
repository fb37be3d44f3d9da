//! Background work of the lab: a `stacklab` subcommand (`stack ... --json`, `inspect ...
//! --json`) run as a child process ([`crate::jobs::Job`]), so a libtorch crash cannot take
//! the lab down and cancelling is a kill. Its reader threads wake the main loop through a
//! [`Waker`]; the UI never waits on it.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::action::Event;
pub use crate::jobs::{Job, Outcome};

/// Wakes the main loop from another thread (a background result arrived). Tests use
/// [`Waker::none`] and poll.
#[derive(Clone, Default)]
pub struct Waker(Option<UnboundedSender<Event>>);

impl Waker {
    pub fn new(tx: UnboundedSender<Event>) -> Waker {
        Waker(Some(tx))
    }
    pub fn none() -> Waker {
        Waker(None)
    }
    pub fn wake(&self) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Event::Wake);
        }
    }
    /// This waker as a job's wake callback.
    pub fn as_wake(&self) -> crate::jobs::Wake {
        let w = self.clone();
        Arc::new(move || w.wake())
    }
}
