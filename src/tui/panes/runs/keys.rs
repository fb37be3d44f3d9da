//! The Runs pane's keys: the open dialog or form, the filter and search inputs, moving
//! the selection, and the configurable action keys.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{Confirm, Input, LogSource, Overlay, RunsPane};
use crate::runs::registry::Phase;
use crate::tui::action::Handled;
use crate::tui::config::Window;
use crate::tui::widgets::form::FormResult;

impl RunsPane {
    /// A key while the pane is shown (the pane's `handle_key`).
    pub(super) fn on_key(&mut self, k: KeyEvent) -> Handled {
        if let Some(overlay) = self.overlay.take() {
            self.overlay_key(overlay, k);
            return Handled::Yes;
        }
        if self.input != Input::None {
            self.input_key(k);
            return Handled::Yes;
        }
        self.message = None;
        match k.code {
            KeyCode::Up => self.select_by(-1),
            KeyCode::Down => self.select_by(1),
            KeyCode::Home => self.select_by(i64::MIN / 2),
            KeyCode::End => self.select_by(i64::MAX / 2),
            KeyCode::PageUp => self.log.scroll_up(10),
            KeyCode::PageDown => self.log.scroll_down(10),
            KeyCode::Char('k') if self.key_for("kill") != 'k' => self.select_by(-1),
            KeyCode::Char('j') => self.select_by(1),
            KeyCode::Char(c) => return self.handle_action_key(c),
            _ => return Handled::No,
        }
        Handled::Yes
    }

    /// A key while a dialog is open: the confirmation's answer, or the new-run form's.
    fn overlay_key(&mut self, overlay: Overlay, k: KeyEvent) {
        match overlay {
            Overlay::Confirm(c) => {
                if k.code == KeyCode::Char('y') {
                    self.confirmed(c);
                } else {
                    self.notify("cancelled", false);
                }
            }
            Overlay::New(mut form) => match form.handle_key(k) {
                FormResult::Cancel => self.notify("cancelled", false),
                FormResult::Submit => {
                    let f = form.clone();
                    match self.submit_new(&f) {
                        Ok(name) => {
                            self.last_config = Some(f.get("config").to_string());
                            self.selected = Some(name.clone());
                            self.notify(format!("{name}: queued"), false);
                            self.tick();
                            self.rebuild_order();
                        }
                        Err(e) => {
                            form.error = Some(e);
                            self.overlay = Some(Overlay::New(form));
                        }
                    }
                }
                FormResult::Changed if form.focus == 0 => {
                    let name = self.default_name(form.get("config"));
                    form.set_text("name", &name);
                    self.overlay = Some(Overlay::New(form));
                }
                _ => self.overlay = Some(Overlay::New(form)),
            },
        }
    }

    /// A key while typing the filter or a log search.
    fn input_key(&mut self, k: KeyEvent) {
        let text = match self.input {
            Input::Filter => &mut self.filter,
            _ => &mut self.log.search,
        };
        match k.code {
            KeyCode::Esc => {
                text.clear();
                self.input = Input::None;
            }
            KeyCode::Enter => {
                if self.input == Input::Search
                    && !self.log.find_previous()
                    && !self.log.search.is_empty()
                {
                    self.notify(format!("`{}` not found in the log", self.log.search), true);
                }
                self.input = Input::None;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => text.push(c),
            _ => {}
        }
        if self.input == Input::Filter || k.code == KeyCode::Esc {
            self.rebuild_order();
        }
    }

    fn handle_action_key(&mut self, c: char) -> Handled {
        let sel = self.selected.clone();
        let is = |a: &str| self.key_for(a) == c;
        if is("new") {
            self.overlay = Some(Overlay::New(self.new_run_form()));
        } else if is("filter") {
            self.input = Input::Filter;
        } else if is("search") {
            self.input = Input::Search;
        } else if is("sort") {
            self.sort = self.sort.next();
            self.rebuild_order();
            self.notify(format!("sorted by {}", self.sort.as_str()), false);
        } else if is("log_y") {
            self.chart.log_y = !self.chart.log_y;
        } else if is("window") {
            self.chart.window = match self.chart.window {
                Window::All => Window::Recent,
                Window::Recent => Window::All,
            };
        } else if is("smooth_less") {
            self.chart.ema = ((self.chart.ema - 0.1).max(0.0) * 100.0).round() / 100.0;
        } else if is("smooth_more") {
            self.chart.ema = ((self.chart.ema + 0.1).min(0.99) * 100.0).round() / 100.0;
        } else if is("follow") {
            self.log.follow = !self.log.follow;
            self.log.scroll = 0;
        } else if is("output") {
            self.log_source = match self.log_source {
                LogSource::Train => LogSource::Output,
                LogSource::Output => LogSource::Train,
            };
            self.sync_log();
        } else if let Some(n) = sel {
            let phase = self.phase(&n);
            if is("pin") {
                if let Some(i) = self.pinned.iter().position(|p| *p == n) {
                    self.pinned.remove(i);
                } else {
                    self.pinned.push(n);
                }
            } else if is("stop") {
                if phase.is_active() {
                    self.overlay = Some(Overlay::Confirm(Confirm::Stop(n)));
                } else {
                    self.notify(format!("{n} is {}, not running", phase.as_str()), true);
                }
            } else if is("kill") {
                if phase.is_active() {
                    self.overlay = Some(Overlay::Confirm(Confirm::Kill(n)));
                } else {
                    self.notify(format!("{n} is {}, not running", phase.as_str()), true);
                }
            } else if is("resume") {
                self.resume(&n);
            } else if is("delete") {
                match phase {
                    Phase::Queued => self.overlay = Some(Overlay::Confirm(Confirm::Cancel(n))),
                    Phase::Running | Phase::Starting => {
                        self.notify(format!("{n} is running: stop it first (s)"), true)
                    }
                    Phase::Corrupt => self.notify(
                        format!(
                            "{n} is not a readable run; the lab leaves it alone ({})",
                            self.root.join(&n).display()
                        ),
                        true,
                    ),
                    _ => self.overlay = Some(Overlay::Confirm(Confirm::Delete(n))),
                }
            } else {
                return Handled::No;
            }
        } else {
            return Handled::No;
        }
        Handled::Yes
    }
}
