//! The Stack builder pane: the parts sent from the Checkpoints pane, their block ranges
//! (the seed's two flags, or edited by hand), the three boundary norms, the resulting block
//! strip with the seams, what `stack` would refuse or warn about; evaluation in the
//! background as a child `stacklab stack ... --json` (cancelled when the stack changes or
//! on `Esc`), the results table of every stack evaluated, and saving as a spec or a
//! checkpoint.

pub mod draft;
mod draw;
pub mod results;
mod save;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::Frame;

use super::Pane;
use crate::jobs::request::{HealRequest, StackRequest, StackSelection};
use crate::runs::catalog::Catalog;
use crate::stack::results::StackReport;
use crate::stack::EvalOptions;
use crate::tui::action::{Action, Handled};
use crate::tui::jobs::{Job, Outcome, Waker};
use crate::tui::theme::Theme;
use draft::{Draft, End, Part};
use results::{Row, SortBy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Evaluate,
    /// Evaluate and save the stack as a checkpoint folder.
    SaveCheckpoint,
    /// Train the stack's heal arms (`stacklab heal`).
    Heal,
}

/// Steps per arm of a heal started with `H` (`stacklab heal --steps K` for others).
pub const HEAL_STEPS: i64 = 100;

pub struct BuilderPane {
    pub draft: Draft,
    /// Where `--save` puts stacks (the checkpoint dir).
    pub root: PathBuf,
    pub exe: PathBuf,
    pub device: String,
    waker: Waker,
    pub job: Option<Job>,
    /// The draft the job evaluates: a job for another draft is stale.
    job_draft: Option<Draft>,
    pub job_kind: JobKind,
    pub results_file: PathBuf,
    pub rows: Vec<Row>,
    pub sort: SortBy,
    /// The results row Enter opens in the builder (an index into `rows`).
    pub row_cursor: usize,
    /// (text, is_error).
    pub message: Option<(String, bool)>,
    /// A spec being written in the background (its message when done).
    spec_done: Arc<Mutex<Option<(String, bool)>>>,
}

impl BuilderPane {
    pub fn new(root: &Path, exe: &Path, device: &str, results_file: &Path, waker: Waker) -> Self {
        let mut p = BuilderPane {
            draft: Draft::new(vec![]),
            root: root.to_path_buf(),
            exe: exe.to_path_buf(),
            device: device.to_string(),
            waker,
            job: None,
            job_draft: None,
            job_kind: JobKind::Evaluate,
            results_file: results_file.to_path_buf(),
            rows: vec![],
            sort: SortBy::Newest,
            row_cursor: 0,
            message: None,
            spec_done: Arc::default(),
        };
        p.reload_results();
        p
    }

    pub fn reload_results(&mut self) {
        match results::load(&self.results_file) {
            Ok((mut rows, bad)) => {
                results::sort(&mut rows, self.sort);
                self.rows = rows;
                self.row_cursor = self.row_cursor.min(self.rows.len().saturating_sub(1));
                if bad > 0 {
                    self.message = Some((
                        format!(
                            "{}: {bad} rows could not be read and are not shown",
                            self.results_file.display()
                        ),
                        true,
                    ));
                }
            }
            Err(e) => self.message = Some((format!("{e:#}"), true)),
        }
    }

    /// Takes the marked checkpoints as the new stack.
    pub fn set_parts(&mut self, paths: &[PathBuf]) {
        match self.parts_of(paths) {
            Ok(parts) => {
                self.draft = Draft::new(parts);
                self.message = None;
                self.cancel_if_stale();
            }
            Err(why) => self.message = Some((why, true)),
        }
    }

    /// The checkpoints as stack parts, or which one is missing or unreadable.
    fn parts_of(&self, paths: &[PathBuf]) -> Result<Vec<Part>, String> {
        let catalog = Catalog::scan(&self.root);
        let mut parts = Vec::new();
        for p in paths {
            let entry = catalog.find(p).cloned().or_else(|| {
                // Marked from elsewhere (a file outside the checkpoint dir).
                Catalog::scan(p.parent()?).find(p).cloned()
            });
            match entry.map(|e| Part::from_entry(&e)) {
                Some(Ok(part)) => parts.push(part),
                Some(Err(why)) => return Err(why),
                None => return Err(format!("{} is no longer there", p.display())),
            }
        }
        Ok(parts)
    }

    /// A job for a stack other than the one on screen is cancelled.
    fn cancel_if_stale(&mut self) {
        let running = self.job.as_ref().map(|j| j.is_running()).unwrap_or(false);
        if running && self.job_draft.as_ref() != Some(&self.draft) {
            if let Some(j) = self.job.as_mut() {
                j.cancel();
            }
            self.message = Some((
                "evaluation cancelled: the stack changed (e evaluates this one)".into(),
                false,
            ));
        }
    }

    pub fn is_evaluating(&self) -> bool {
        self.job.as_ref().map(|j| j.is_running()).unwrap_or(false)
    }

    /// Opens the stack of the results row under the cursor in the builder: its checkpoints,
    /// block ranges and norms, as it was evaluated.
    fn reopen(&mut self) {
        let Some(row) = self.rows.get(self.row_cursor).cloned() else {
            self.message = Some(("no result to open".into(), true));
            return;
        };
        if row.paths.len() < 2 {
            self.message = Some(("this result does not record its checkpoints".into(), true));
            return;
        }
        let parts = match self.parts_of(&row.paths) {
            Ok(parts) => parts,
            Err(why) => {
                // The stack on screen stays.
                self.message = Some((format!("cannot open that stack: {why}"), true));
                return;
            }
        };
        let d = Draft::new(parts);
        if let Err(why) = results::check_ranges(&row, &d.depths()) {
            self.message = Some((
                format!(
                    "cannot open that stack: {} records {why}",
                    self.results_file.display()
                ),
                true,
            ));
            return;
        }
        let norm = |s: &str, or| s.parse().unwrap_or(or);
        let norms = crate::stack::spec::StackNorms {
            norm_wte: norm(&row.norms[0], d.norms.norm_wte),
            norm_lm_head: norm(&row.norms[1], d.norms.norm_lm_head),
            norm_inter_model: norm(&row.norms[2], d.norms.norm_inter_model),
        };
        self.draft = d.with_layers(row.ranges.clone(), norms);
        self.message = Some((
            format!(
                "opened {} (evaluated {:.4}): e evaluates it again",
                self.draft.describe(),
                row.val_loss_stack
            ),
            false,
        ));
    }

    fn start(&mut self, kind: JobKind) {
        if let Some(p) = self.draft.problems().first() {
            self.message = Some((p.clone(), true));
            return;
        }
        if let Some(j) = self.job.as_mut() {
            j.cancel();
        }
        let save = (kind == JobKind::SaveCheckpoint).then(|| {
            let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
            self.root.join(format!("stack-{stamp}"))
        });
        let req = StackRequest {
            selection: StackSelection::of(self.draft.spec(), EvalOptions::default(), &self.device),
            results: Some(self.results_file.clone()),
            save,
            no_cache: false,
        };
        match Job::start(
            &self.exe,
            &req.to_args(),
            &self.draft.describe(),
            self.waker.as_wake(),
        ) {
            Ok(j) => {
                self.job = Some(j);
                self.job_draft = Some(self.draft.clone());
                self.job_kind = kind;
                self.message = None;
            }
            Err(e) => self.message = Some((format!("{e:#}"), true)),
        }
    }

    /// Starts `stacklab heal` for the stack on screen (every arm, [`HEAL_STEPS`] steps) and
    /// returns the runs its arms train as.
    fn start_heal(&mut self) -> Option<Vec<String>> {
        if let Some(p) = self.draft.problems().first() {
            self.message = Some((p.clone(), true));
            return None;
        }
        if let Some(j) = self.job.as_mut() {
            j.cancel();
        }
        let req = HealRequest {
            selection: StackSelection::of(self.draft.spec(), EvalOptions::default(), &self.device),
            steps: HEAL_STEPS,
            arms: crate::heal::Arm::ALL
                .iter()
                .map(|a| a.as_str().to_string())
                .collect(),
            name: format!("heal-{}", chrono::Local::now().format("%Y%m%d-%H%M%S")),
            train_w: false,
        };
        match Job::start(
            &self.exe,
            &req.to_args(),
            &format!("heal {}", self.draft.describe()),
            self.waker.as_wake(),
        ) {
            Ok(j) => {
                self.job = Some(j);
                self.job_draft = Some(self.draft.clone());
                self.job_kind = JobKind::Heal;
                self.message = None;
                Some(req.runs())
            }
            Err(e) => {
                self.message = Some((format!("{e:#}"), true));
                None
            }
        }
    }

    fn finished(&mut self, outcome: Outcome) {
        if self.job_kind == JobKind::Heal {
            self.message = Some(match outcome {
                Outcome::Done(json) => {
                    match crate::jobs::decode_report::<crate::heal::HealReport>(&json, "heal") {
                        Ok(r) => (crate::heal::summary(&r), false),
                        Err(e) => (format!("{e:#}"), true),
                    }
                }
                Outcome::Failed(e) => (format!("heal failed: {e}"), true),
                Outcome::Cancelled => ("heal cancelled".into(), false),
            });
            return;
        }
        match outcome {
            Outcome::Done(json) => {
                self.reload_results();
                self.message = Some(
                    match crate::jobs::decode_report::<StackReport>(&json, "stack") {
                        Ok(r) => (
                            format!(
                                "stack {:.4} · stack - best part {:+.4}{}",
                                r.val_loss_stack,
                                r.delta_vs_best,
                                r.saved.map(|s| format!(" · saved {s}")).unwrap_or_default()
                            ),
                            false,
                        ),
                        Err(_) => ("the evaluation printed no result".into(), true),
                    },
                );
            }
            Outcome::Failed(e) => self.message = Some((format!("stack failed: {e}"), true)),
            Outcome::Cancelled => {}
        }
    }
}

impl Pane for BuilderPane {
    fn title(&self) -> &str {
        crate::tui::action::BUILDER_TITLE
    }

    fn handle_key(&mut self, k: KeyEvent) -> Handled {
        let d = &mut self.draft;
        match k.code {
            KeyCode::Char('f') => d.toggle_first(),
            KeyCode::Char('l') => d.toggle_last(),
            KeyCode::Char('w') => d.cycle_norm("norm_wte"),
            KeyCode::Char('h') => d.cycle_norm("norm_lm_head"),
            KeyCode::Char('m') => d.cycle_norm("norm_inter_model"),
            KeyCode::Up | KeyCode::Char('k') => d.select(-1),
            KeyCode::Down | KeyCode::Char('j') => d.select(1),
            KeyCode::Char('[') => d.nudge(End::Start, -1),
            KeyCode::Char(']') => d.nudge(End::Start, 1),
            KeyCode::Char('{') => d.nudge(End::End, -1),
            KeyCode::Char('}') => d.nudge(End::End, 1),
            KeyCode::Char('+') => d.duplicate(),
            KeyCode::Char('x') => d.remove(),
            KeyCode::Char('<') => d.move_part(-1),
            KeyCode::Char('>') => d.move_part(1),
            KeyCode::Char('e') => {
                self.start(JobKind::Evaluate);
                return Handled::Yes;
            }
            KeyCode::Char('C') => {
                self.start(JobKind::SaveCheckpoint);
                return Handled::Yes;
            }
            KeyCode::Char('S') => {
                self.save_spec();
                return Handled::Yes;
            }
            KeyCode::Char('H') => {
                return match self.start_heal() {
                    Some(runs) => Handled::Then(Action::CompareRuns(runs)),
                    None => Handled::Yes,
                };
            }
            KeyCode::Char('i') => {
                if let Some(p) = self.draft.problems().first() {
                    self.message = Some((p.clone(), true));
                    return Handled::Yes;
                }
                return Handled::Then(Action::Inspect {
                    spec: self.draft.spec(),
                    eval: EvalOptions::default(),
                    what: self.draft.describe(),
                });
            }
            KeyCode::Esc if self.is_evaluating() => {
                if let Some(j) = self.job.as_mut() {
                    j.cancel();
                }
                self.message = Some(("evaluation cancelled".into(), false));
                return Handled::Yes;
            }
            KeyCode::Char('o') => {
                self.sort = self.sort.next();
                results::sort(&mut self.rows, self.sort);
                return Handled::Yes;
            }
            KeyCode::Char('J') | KeyCode::PageDown | KeyCode::Char('K') | KeyCode::PageUp => {
                let by = match k.code {
                    KeyCode::Char('J') => 1,
                    KeyCode::Char('K') => -1,
                    KeyCode::PageDown => 5,
                    _ => -5,
                };
                let last = self.rows.len().saturating_sub(1) as i64;
                self.row_cursor = (self.row_cursor as i64 + by).clamp(0, last) as usize;
                return Handled::Yes;
            }
            KeyCode::Enter => {
                self.reopen();
                self.cancel_if_stale();
                return Handled::Yes;
            }
            _ => return Handled::No,
        }
        self.cancel_if_stale();
        Handled::Yes
    }

    fn update(&mut self, action: &Action) -> bool {
        match action {
            Action::SendToBuilder(paths) => {
                self.set_parts(paths);
                true
            }
            Action::Tick => {
                let mut changed = false;
                if let Some(m) = self.spec_done.lock().expect("spec state").take() {
                    self.message = Some(m);
                    changed = true;
                }
                let Some(job) = self.job.as_mut() else {
                    return changed;
                };
                if job.poll() {
                    let outcome = job.outcome.clone().expect("finished");
                    self.finished(outcome);
                    return true;
                }
                // A running job's gauge moves.
                changed || job.is_running()
            }
            _ => false,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        draw::draw(self, f, area, theme);
    }

    fn keys(&self) -> Vec<(String, String)> {
        [
            ("↑↓ j k", "select a part"),
            ("f / l", "toggle use_first_layer / use_last_layer"),
            ("[ ]", "move the selected part's range start down / up"),
            ("{ }", "move the selected part's range end down / up"),
            ("w h m", "cycle norm_wte / norm_lm_head / norm_inter_model"),
            ("+ x", "repeat / remove the selected part"),
            ("< >", "move the selected part down / up the stack"),
            ("e", "evaluate in the background (Esc cancels)"),
            ("i", "inspect this stack (Inspect pane)"),
            ("S", "save as a spec file (stack --spec)"),
            ("C", "evaluate and save as a checkpoint"),
            (
                "H",
                "heal: train the stack, A on itself, a fresh model and the better part 100 steps each (Runs pane compares them)",
            ),
            ("o", "sort the results (newest, stack loss, stack - best)"),
            ("J K", "next / previous result (PgDn PgUp: by 5)"),
            ("Enter", "open the selected result's stack here again"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn status_keys(&self) -> String {
        "f/l layers · w/h/m norms · e evaluate · i inspect · S/C save · H heal · J/K Enter reopen"
            .into()
    }
}
