//! The lab: a terminal application used over SSH. This first screen is an overview of what
//! the lab works on: the device, the embedded default corpus, the configs, and the runs under
//! the checkpoint dir (refreshed every second, so running trainings move).

pub mod overview;
pub mod theme;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use overview::Overview;
use theme::Theme;

pub fn run(device: &str) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the lab needs a terminal; for scripts use the subcommands (stacklab --help)");
    }
    let device = crate::device::parse_device(device)?;
    let theme = Theme::load(None)?;
    // Prepare the embedded default before the screen takes over the terminal (seconds, once).
    let dataset = crate::data::embedded::ensure_prepared()?;
    let mut view = Overview::gather(device, Some(dataset));
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> Result<()> {
        let mut last_refresh = Instant::now();
        loop {
            terminal.draw(|f| overview::draw(f, &view, &theme))?;
            if event::poll(Duration::from_millis(250))? {
                // Drain every pending event, then draw once.
                loop {
                    if let Event::Key(k) = event::read()? {
                        if k.kind == KeyEventKind::Press
                            && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                                || (k.code == KeyCode::Char('c')
                                    && k.modifiers.contains(KeyModifiers::CONTROL)))
                        {
                            return Ok(());
                        }
                    }
                    if !event::poll(Duration::ZERO)? {
                        break;
                    }
                }
            }
            if last_refresh.elapsed() >= Duration::from_secs(1) {
                view.refresh_runs();
                last_refresh = Instant::now();
            }
        }
    })();
    ratatui::restore();
    result
}
