//! What flows through the lab's one channel, and what handling it asks the app to do.

use crossterm::event::{KeyEvent, MouseEvent};

/// The panes actions can bring to the front, by title.
pub const BUILDER_TITLE: &str = "Stack";
pub const INSPECT_TITLE: &str = "Inspect";
pub const RUNS_TITLE: &str = "Runs";

/// Everything that reaches the main loop: terminal input, the slow tick that looks for
/// changed run files, signals, and the terminal going away.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// Look at the run files (sizes and times) for changes; reap finished children.
    Tick,
    /// SIGHUP, SIGTERM or SIGINT.
    Signal(i32),
    /// The terminal's input ended or failed (an SSH link dropped without SIGHUP).
    TerminalGone(String),
    /// A background job has news (progress, a result): the panes look at their jobs.
    Wake,
}

/// What a key or an event asks of the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Quit,
    NextPane,
    PrevPane,
    Pane(usize),
    ToggleHelp,
    Tick,
    /// A line for the status bar (`true`: an error).
    Notify(String, bool),
    /// Checkpoints for the stack builder, bottom first; shows the builder.
    SendToBuilder(Vec<std::path::PathBuf>),
    /// Compare these runs on the Runs pane's chart (pinned); shows it.
    CompareRuns(Vec<String>),
    /// Inspect this stack, scored this way; shows the Inspect pane.
    Inspect {
        spec: crate::stack::StackSpec,
        eval: crate::stack::EvalOptions,
        what: String,
    },
}

/// A pane's answer to a key (one per key press: its size does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Not this pane's key: the app's global keys get it.
    No,
    /// Consumed; redraw.
    Yes,
    /// Consumed, and the app should do this.
    Then(Action),
}
