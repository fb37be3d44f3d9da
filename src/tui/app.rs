//! The application: the panes, the help screen, the status line; routes events and knows
//! whether anything must be redrawn. Independent of the terminal, so tests drive it with
//! keys and draw it on a `TestBackend`.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::action::{Action, Event, Handled};
use super::panes::Pane;
use super::theme::Theme;
use super::widgets::dialog;

/// The smallest terminal the lab draws in.
pub const MIN_SIZE: (u16, u16) = (60, 20);

pub struct App {
    pub panes: Vec<Box<dyn Pane>>,
    pub active: usize,
    pub theme: Theme,
    pub help: bool,
    pub quit: bool,
    /// Why the lab is ending, when not by `q`.
    pub exit_reason: Option<String>,
    /// Something changed since the last draw.
    pub dirty: bool,
    /// The lab's log file, shown in the help.
    pub log_file: String,
}

impl App {
    pub fn new(panes: Vec<Box<dyn Pane>>, theme: Theme, log_file: String) -> App {
        App {
            panes,
            active: 0,
            theme,
            help: false,
            quit: false,
            exit_reason: None,
            dirty: true,
            log_file,
        }
    }

    pub fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::Key(k) => {
                if k.kind != KeyEventKind::Release {
                    self.handle_key(k);
                }
            }
            // With --mouse, the wheel moves through the list.
            Event::Mouse(m) => match m.kind {
                crossterm::event::MouseEventKind::ScrollUp => {
                    self.handle_key(KeyEvent::new(KeyCode::Up, KeyModifiers::NONE))
                }
                crossterm::event::MouseEventKind::ScrollDown => {
                    self.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE))
                }
                _ => {}
            },
            Event::Resize(..) => self.dirty = true,
            Event::Tick | Event::Wake => self.update(Action::Tick),
            Event::Signal(sig) => {
                self.exit_reason = Some(format!("signal {sig}"));
                self.quit = true;
            }
            Event::TerminalGone(why) => {
                self.exit_reason = Some(format!("the terminal went away ({why})"));
                self.quit = true;
            }
        }
    }

    pub fn handle_key(&mut self, k: KeyEvent) {
        self.dirty = true;
        if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
            return self.update(Action::Quit);
        }
        if self.help {
            self.help = false;
            return;
        }
        let pane = &mut self.panes[self.active];
        let captures = pane.captures_input();
        match pane.handle_key(k) {
            Handled::Yes => return,
            Handled::Then(a) => return self.update(a),
            Handled::No if captures => return,
            Handled::No => {}
        }
        let action = match k.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') => Action::ToggleHelp,
            KeyCode::Tab => Action::NextPane,
            KeyCode::BackTab => Action::PrevPane,
            KeyCode::Char(c @ '1'..='9') => Action::Pane(c as usize - '1' as usize),
            _ => return,
        };
        self.update(action);
    }

    pub fn update(&mut self, action: Action) {
        let n = self.panes.len();
        match action {
            Action::Quit => self.quit = true,
            Action::NextPane => self.active = (self.active + 1) % n,
            Action::PrevPane => self.active = (self.active + n - 1) % n,
            Action::Pane(i) if i < n => self.active = i,
            Action::Pane(_) => {}
            Action::ToggleHelp => self.help = !self.help,
            Action::SendToBuilder(_) | Action::Inspect { .. } | Action::CompareRuns(_) => {
                let title = match action {
                    Action::SendToBuilder(_) => super::action::BUILDER_TITLE,
                    Action::CompareRuns(_) => super::action::RUNS_TITLE,
                    _ => super::action::INSPECT_TITLE,
                };
                for p in &mut self.panes {
                    p.update(&action);
                }
                if let Some(i) = self.panes.iter().position(|p| p.title() == title) {
                    self.active = i;
                }
            }
            other => {
                for p in &mut self.panes {
                    self.dirty |= p.update(&other);
                }
                return;
            }
        }
        self.dirty = true;
    }

    /// Draws the frame; in ASCII mode every cell is then rewritten in ASCII.
    pub fn draw(&mut self, f: &mut Frame) {
        self.draw_frame(f);
        if self.theme.ascii {
            super::ascii::to_ascii(f.buffer_mut());
        }
    }

    /// The tab bar's spans, fitted to `width`: the name, then every pane's number and title;
    /// when that is too wide the name goes, then the titles of the panes not shown (the
    /// active pane keeps its title).
    fn tab_spans(&self, width: u16) -> Vec<Span<'static>> {
        let theme = &self.theme;
        let brand = Span::styled(
            " stacklab ",
            Style::default()
                .fg(theme.accent)
                .add_modifier(Modifier::BOLD),
        );
        let tabs = |short: bool| -> Vec<Span<'static>> {
            self.panes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let active = i == self.active;
                    let label = if short && !active {
                        format!(" {} ", i + 1)
                    } else {
                        format!(" {} {} ", i + 1, p.title())
                    };
                    let style = if active {
                        super::widgets::selected_style(theme).fg(theme.accent)
                    } else {
                        Style::default().fg(theme.dim)
                    };
                    Span::styled(label, style)
                })
                .collect()
        };
        let fits = |spans: &[Span]| spans.iter().map(Span::width).sum::<usize>() <= width as usize;
        let full = tabs(false);
        let mut with_brand = vec![brand.clone()];
        with_brand.extend(full.iter().cloned());
        if fits(&with_brand) {
            return with_brand;
        }
        if fits(&full) {
            return full;
        }
        let mut short = vec![brand];
        short.extend(tabs(true));
        if fits(&short) {
            return short;
        }
        tabs(true)
    }

    fn draw_frame(&mut self, f: &mut Frame) {
        let area = f.area();
        let theme = &self.theme;
        if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
            dialog::too_small(f, MIN_SIZE, theme);
            return;
        }
        let [tabs, body, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(area);
        let spans = self.tab_spans(tabs.width);
        f.render_widget(Paragraph::new(Line::from(spans)), tabs);
        self.panes[self.active].draw(f, body, theme);
        let pane_keys = self.panes[self.active].status_keys();
        let global = " ? help · Tab panes · q quit ";
        let [left, right] = Layout::horizontal([
            Constraint::Min(1),
            Constraint::Length(global.chars().count() as u16),
        ])
        .areas(status);
        f.render_widget(
            Paragraph::new(Span::styled(
                format!(" {pane_keys}"),
                Style::default().fg(theme.text),
            )),
            left,
        );
        f.render_widget(
            Paragraph::new(Span::styled(global, Style::default().fg(theme.dim))),
            right,
        );
        if self.help {
            let global: Vec<(String, String)> = [
                ("Tab S-Tab", "next / previous pane"),
                ("1-9", "go to a pane"),
                ("?", "this help"),
                ("q Ctrl-c", "quit (trainings keep running)"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let pane = &self.panes[self.active];
            let sections = vec![
                (format!("{} pane", pane.title()), pane.keys()),
                ("everywhere".to_string(), global),
            ];
            dialog::help(
                f,
                body,
                &sections,
                &[format!("lab log: {}", self.log_file)],
                theme,
            );
        }
    }
}
