//! The Runs pane: every run under the checkpoint dir, the selected run's curves, progress,
//! config and log; starting (through the queue), stopping, killing, resuming and deleting
//! trainings. Trainings are separate processes in their own sessions: this pane only reads
//! their run folders and signals them.

mod keys;
mod lifecycle;
mod new_run;
mod trainings;
mod view;

pub use trainings::Trainings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::widgets::TableState;
use ratatui::Frame;

use super::Pane;
use crate::runs::gpu_use::RunGpuUse;
use crate::runs::registry::{Phase, RunEntry};
use crate::system::sampler::Monitor;
use crate::tui::action::{Action, Handled};
use crate::tui::config::{LabConfig, RUN_KEYS};
use crate::tui::theme::Theme;
use crate::tui::widgets::form::Form;
use crate::tui::widgets::log_view::LogTail;
use crate::tui::widgets::loss_chart::ChartView;

/// Lines of a log kept in memory.
pub const LOG_CAP: usize = 2000;
pub use crate::runs::launch::{output_log, LAB_DIR};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    State,
    Age,
    ValLoss,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Name => Sort::State,
            Sort::State => Sort::Age,
            Sort::Age => Sort::ValLoss,
            Sort::ValLoss => Sort::Name,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::State => "state",
            Sort::Age => "age",
            Sort::ValLoss => "val loss",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// `train.log`, what the training logs.
    Train,
    /// What the process printed (the lab's `.lab/NAME.out`).
    Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    None,
    Filter,
    Search,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    Stop(String),
    Kill(String),
    /// The second confirmation of a kill.
    KillSure(String),
    Delete(String),
    Cancel(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    Confirm(Confirm),
    New(Form),
}

pub struct RunsPane {
    pub root: PathBuf,
    pub config_dir: PathBuf,
    /// The device new runs train on.
    pub device: String,
    pub lab: LabConfig,
    /// The trainings as processes: registry, queue, children.
    pub trainings: Trainings,
    /// Visible run names, in list order.
    pub order: Vec<String>,
    pub table: TableState,
    pub selected: Option<String>,
    pub sort: Sort,
    pub filter: String,
    pub input: Input,
    pub chart: ChartView,
    pub pinned: Vec<String>,
    pub log: LogTail,
    pub log_source: LogSource,
    pub overlay: Option<Overlay>,
    /// The config of the last run started from the new-run form (offered first next time).
    pub last_config: Option<String>,
    pub message: Option<(String, bool)>,
    /// A fixed "now" (tests); the clock otherwise.
    pub now: Option<SystemTime>,
    last_second: u64,
    /// The machine's sampler (GPU processes mapped to runs), when the lab runs one.
    pub monitor: Option<Monitor>,
    /// What each run uses of the GPUs, from the monitor's latest sample.
    pub gpu_use: BTreeMap<String, RunGpuUse>,
}

impl RunsPane {
    pub fn new(
        root: &Path,
        config_dir: &Path,
        device: &str,
        lab: LabConfig,
        ascii: bool,
    ) -> RunsPane {
        let chart = ChartView {
            ema: lab.chart.ema,
            log_y: lab.chart.log_y,
            window: lab.chart.window,
            recent_steps: lab.chart.recent_steps,
            ascii: ascii || lab.ascii,
        };
        RunsPane {
            root: root.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
            device: device.to_string(),
            lab,
            trainings: Trainings::new(
                root,
                &crate::jobs::stacklab_exe().unwrap_or_else(|_| PathBuf::from("stacklab")),
            ),
            order: Vec::new(),
            table: TableState::default(),
            selected: None,
            sort: Sort::Name,
            filter: String::new(),
            input: Input::None,
            chart,
            pinned: Vec::new(),
            log: LogTail::new(Path::new(""), LOG_CAP),
            log_source: LogSource::Train,
            overlay: None,
            last_config: None,
            message: None,
            now: None,
            last_second: 0,
            monitor: None,
            gpu_use: BTreeMap::new(),
        }
    }

    fn now(&self) -> SystemTime {
        self.now.unwrap_or_else(SystemTime::now)
    }

    /// The phase shown for a run (see [`Trainings::phase`]).
    pub fn phase(&self, name: &str) -> Phase {
        self.trainings.phase(name)
    }

    pub fn selected_entry(&self) -> Option<&RunEntry> {
        self.trainings.registry.get(self.selected.as_deref()?)
    }

    fn notify(&mut self, msg: impl Into<String>, error: bool) {
        self.message = Some((msg.into(), error));
    }

    fn key_for(&self, action: &str) -> char {
        self.lab.key(action)
    }
}

impl Pane for RunsPane {
    fn title(&self) -> &str {
        crate::tui::action::RUNS_TITLE
    }

    fn captures_input(&self) -> bool {
        self.input != Input::None || self.overlay.is_some()
    }

    fn handle_key(&mut self, k: KeyEvent) -> Handled {
        self.on_key(k)
    }

    fn update(&mut self, action: &Action) -> bool {
        match action {
            Action::Tick => self.tick(),
            // The runs may not exist yet (a heal's arms start one after another): pinned,
            // each joins the chart once it has metrics.
            Action::CompareRuns(names) => {
                self.pinned = names.clone();
                true
            }
            _ => false,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        self.draw_pane(f, area, theme)
    }

    fn keys(&self) -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> = vec![
            ("↑↓ j k".into(), "select a run".into()),
            ("PgUp PgDn".into(), "scroll the log".into()),
        ];
        for (action, _, what) in RUN_KEYS {
            keys.push((self.key_for(action).to_string(), what.to_string()));
        }
        keys
    }

    fn status_keys(&self) -> String {
        if let Some((m, _)) = &self.message {
            return m.clone();
        }
        match self.input {
            Input::Filter => return "type to filter · Enter keep · Esc clear".into(),
            Input::Search => {
                return format!(
                    "search the log: {}_ · Enter find · Esc clear",
                    self.log.search
                )
            }
            Input::None => {}
        }
        let k = |a: &str| self.key_for(a);
        format!(
            "{} new · {} stop · {} kill · {} resume · {} delete · {} filter · {} pin",
            k("new"),
            k("stop"),
            k("kill"),
            k("resume"),
            k("delete"),
            k("filter"),
            k("pin")
        )
    }
}

impl RunsPane {
    /// Whether the status line shows an error.
    pub fn message_is_error(&self) -> bool {
        self.message.as_ref().is_some_and(|(_, e)| *e)
    }
}
