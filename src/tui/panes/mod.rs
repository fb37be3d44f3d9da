//! One file per pane. A pane owns its state, answers keys, updates on actions and draws
//! itself; the app routes between them.

pub mod builder;
pub mod checkpoints;
pub mod inspect;
pub mod runs;
pub mod system;

use crossterm::event::KeyEvent;
use ratatui::layout::Rect;
use ratatui::Frame;

use super::action::{Action, Handled};
use super::theme::Theme;

pub trait Pane {
    fn title(&self) -> &str;
    /// A key while this pane is shown.
    fn handle_key(&mut self, key: KeyEvent) -> Handled;
    /// An action for every pane (the tick); returns whether the pane must be redrawn.
    fn update(&mut self, action: &Action) -> bool;
    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme);
    /// Every key of the pane, for the help screen.
    fn keys(&self) -> Vec<(String, String)>;
    /// The main keys, for the status line.
    fn status_keys(&self) -> String;
    /// True while the pane takes text (a form, a filter): global keys like `q` are typed.
    fn captures_input(&self) -> bool {
        false
    }
}
