//! The Inspect pane: for the stack sent from the builder, `stacklab inspect ... --json` runs
//! in the background (the same code as the command; JSON in, drawing out): per-layer
//! residual-norm histograms through the stack with the seam marked, each model alone beside
//! it, RMS percentiles per layer on a log axis, the logit-lens loss per layer, the seam's
//! numbers, and a key that writes the figures (`inspect --plot`).

mod draw;

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::Frame;

use super::Pane;
use crate::inspect::report::InspectReport;
use crate::jobs::request::{InspectRequest, StackSelection};
use crate::stack::{EvalOptions, StackSpec};
use crate::tui::action::{Action, Handled};
use crate::tui::jobs::{Job, Outcome, Waker};
use crate::tui::theme::Theme;

pub struct InspectPane {
    pub exe: PathBuf,
    /// Where `p` writes figures (a folder per export).
    pub figures_root: PathBuf,
    pub device: String,
    waker: Waker,
    /// The stack (spec and how it is scored) and its description.
    pub request: Option<(StackSpec, EvalOptions, String)>,
    pub job: Option<Job>,
    /// The figures folder the running job writes, if it is an export.
    plot_dir: Option<PathBuf>,
    pub report: Option<InspectReport>,
    /// The stack the report is of.
    pub report_of: String,
    /// Written figures: the folder and its files.
    pub figures: Option<(PathBuf, Vec<String>)>,
    pub message: Option<(String, bool)>,
    /// First heat-map row shown (for stacks deeper than the screen).
    pub scroll: usize,
}

/// Where the lab writes figures.
pub fn figures_dir() -> PathBuf {
    crate::paths::data_dir().join("lab").join("figures")
}

impl InspectPane {
    pub fn new(exe: &Path, device: &str, figures_root: &Path, waker: Waker) -> InspectPane {
        InspectPane {
            exe: exe.to_path_buf(),
            figures_root: figures_root.to_path_buf(),
            device: device.to_string(),
            waker,
            request: None,
            job: None,
            plot_dir: None,
            report: None,
            report_of: String::new(),
            figures: None,
            message: None,
            scroll: 0,
        }
    }

    pub fn is_running(&self) -> bool {
        self.job.as_ref().map(|j| j.is_running()).unwrap_or(false)
    }

    fn start(&mut self, plot: bool) {
        let Some((spec, eval, what)) = self.request.clone() else {
            self.message = Some((
                "no stack to inspect: build one in the Stack pane and press i".into(),
                true,
            ));
            return;
        };
        if let Some(j) = self.job.as_mut() {
            j.cancel();
        }
        self.plot_dir = plot.then(|| {
            let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
            self.figures_root.join(format!("stack-{stamp}"))
        });
        let req = InspectRequest {
            selection: StackSelection::of(spec, eval, &self.device),
            plot: self.plot_dir.clone(),
            stitch: 0,
        };
        match Job::start(&self.exe, &req.to_args(), &what, self.waker.as_wake()) {
            Ok(j) => {
                self.job = Some(j);
                self.message = None;
            }
            Err(e) => self.message = Some((format!("{e:#}"), true)),
        }
    }

    /// Shows a report (from a finished job, or a test's fixed state).
    pub fn show(&mut self, report: InspectReport, of: &str) {
        self.report = Some(report);
        self.report_of = of.to_string();
        self.scroll = 0;
    }

    fn finished(&mut self, outcome: Outcome, what: String) {
        match outcome {
            Outcome::Done(json) => {
                match crate::jobs::decode_report::<InspectReport>(&json, "inspect") {
                    Ok(r) => {
                        self.show(r, &what);
                        if let Some(dir) = self.plot_dir.take() {
                            let mut files: Vec<String> = std::fs::read_dir(&dir)
                                .into_iter()
                                .flatten()
                                .flatten()
                                .map(|e| e.file_name().to_string_lossy().into_owned())
                                .collect();
                            files.sort();
                            self.message = Some((
                                format!("{} figures written to {}", files.len(), dir.display()),
                                false,
                            ));
                            self.figures = Some((dir, files));
                        }
                    }
                    Err(e) => self.message = Some((format!("{e:#}"), true)),
                }
            }
            Outcome::Failed(e) => self.message = Some((format!("inspect failed: {e}"), true)),
            Outcome::Cancelled => {}
        }
    }
}

impl Pane for InspectPane {
    fn title(&self) -> &str {
        crate::tui::action::INSPECT_TITLE
    }

    fn handle_key(&mut self, k: KeyEvent) -> Handled {
        match k.code {
            KeyCode::Char('r') | KeyCode::Char('e') => self.start(false),
            KeyCode::Char('p') => self.start(true),
            KeyCode::Esc if self.is_running() => {
                if let Some(j) = self.job.as_mut() {
                    j.cancel();
                }
                self.plot_dir = None;
                self.message = Some(("inspection cancelled".into(), false));
            }
            KeyCode::Down | KeyCode::Char('j') => self.scroll += 1,
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            _ => return Handled::No,
        }
        Handled::Yes
    }

    fn update(&mut self, action: &Action) -> bool {
        match action {
            Action::Inspect { spec, eval, what } => {
                let new = Some((spec.clone(), eval.clone(), what.clone()));
                if self.request != new || self.report.is_none() {
                    self.request = new;
                    self.start(false);
                }
                true
            }
            Action::Tick => {
                let Some(job) = self.job.as_mut() else {
                    return false;
                };
                if job.poll() {
                    let (outcome, what) =
                        (job.outcome.clone().expect("finished"), job.what.clone());
                    self.finished(outcome, what);
                    return true;
                }
                job.is_running()
            }
            _ => false,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        draw::draw(self, f, area, theme);
    }

    fn keys(&self) -> Vec<(String, String)> {
        [
            ("r e", "inspect the stack again"),
            (
                "p",
                "write the figures (inspect --plot) and show their paths",
            ),
            ("↑↓ j k", "scroll the heat maps"),
            ("Esc", "cancel a running inspection"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn status_keys(&self) -> String {
        "r recompute · p export figures · ↑↓ scroll".into()
    }
}
