//! The overview pane: device, data, configs and runs at a glance.

use std::path::PathBuf;

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;
use tch::Device;

use super::Pane;
use crate::data::prepare::Dataset;
use crate::runs::registry::{list_runs, RunSummary};
use crate::tui::action::{Action, Handled};
use crate::tui::theme::Theme;
use crate::tui::widgets::block;

pub struct Overview {
    pub device: String,
    pub dataset: Option<Dataset>,
    pub configs: Vec<String>,
    pub checkpoint_dir: PathBuf,
    pub runs: Vec<RunSummary>,
}

impl Overview {
    pub fn gather(device: Device, dataset: Option<Dataset>) -> Overview {
        let config_dir = crate::paths::config_dir();
        let mut configs: Vec<String> = std::fs::read_dir(&config_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml")
                    .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        configs.sort();
        let checkpoint_dir = crate::paths::checkpoint_dir();
        let runs = list_runs(&checkpoint_dir);
        Overview {
            device: crate::device::describe(device),
            dataset,
            configs,
            checkpoint_dir,
            runs,
        }
    }

    /// Returns whether the list changed.
    pub fn refresh_runs(&mut self) -> bool {
        let runs = list_runs(&self.checkpoint_dir);
        let changed = runs != self.runs;
        self.runs = runs;
        changed
    }
}

impl Pane for Overview {
    fn title(&self) -> &str {
        "Overview"
    }

    fn handle_key(&mut self, _key: crossterm::event::KeyEvent) -> Handled {
        Handled::No
    }

    fn update(&mut self, action: &Action) -> bool {
        match action {
            Action::Tick => self.refresh_runs(),
            _ => false,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: ratatui::layout::Rect, theme: &Theme) {
        draw(f, area, self, theme)
    }

    fn keys(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn status_keys(&self) -> String {
        String::new()
    }
}

pub fn draw(f: &mut Frame, area: ratatui::layout::Rect, v: &Overview, theme: &Theme) {
    let [head, data, runs] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(area);
    let title = Line::from(vec![
        Span::styled(
            format!("stacklab {}", env!("CARGO_PKG_VERSION")),
            Style::default()
                .fg(theme.accent)
                .add_modifier(Modifier::BOLD),
        ),
        Span::styled("  device ", Style::default().fg(theme.dim)),
        Span::styled(v.device.clone(), Style::default().fg(theme.text)),
    ]);
    f.render_widget(Paragraph::new(title).block(block("lab", theme)), head);
    f.render_widget(
        Paragraph::new(data_lines(v, theme)).block(block("data", theme)),
        data,
    );
    let title = format!("runs in {}", v.checkpoint_dir.display());
    f.render_widget(runs_table(v, theme).block(block(&title, theme)), runs);
}

/// The embedded corpus (when prepared) and the configs.
fn data_lines(v: &Overview, theme: &Theme) -> Vec<Line<'static>> {
    match &v.dataset {
        Some(ds) => vec![
            Line::from(format!(
                "embedded corpus: Shakespeare, {} train / {} val tokens, BPE vocabulary {}",
                ds.info.train_tokens, ds.info.val_tokens, ds.info.vocab_size
            )),
            Line::from(Span::styled(
                ds.dir.display().to_string(),
                Style::default().fg(theme.dim),
            )),
            Line::from(format!("configs: {}", v.configs.join(", "))),
        ],
        None => vec![Line::from("embedded corpus: not prepared")],
    }
}

/// A row per run (state coloured), or how to start one.
fn runs_table(v: &Overview, theme: &Theme) -> Table<'static> {
    if v.runs.is_empty() {
        return Table::new(
            vec![Row::new(vec![Span::styled(
                "no runs yet: n in the Runs pane, or stacklab train --config tiny",
                Style::default().fg(theme.dim),
            )])],
            [Constraint::Min(10)],
        );
    }
    let header = Row::new(["run", "state", "step", "val loss", "checkpoints", "message"]).style(
        Style::default()
            .fg(theme.accent)
            .add_modifier(Modifier::BOLD),
    );
    let rows: Vec<Row> = v
        .runs
        .iter()
        .map(|r| {
            let color = match r.state.as_str() {
                "running" | "starting" => theme.accent,
                "done" => theme.ok,
                "stopped" => theme.warn,
                _ => theme.error,
            };
            Row::new(vec![
                Span::raw(r.name.clone()),
                Span::styled(r.state.clone(), Style::default().fg(color)),
                Span::raw(format!("{}/{}", r.step, r.total_steps)),
                Span::raw(
                    r.last_val_loss
                        .map(|l| format!("{l:.4}"))
                        .unwrap_or_else(|| "-".into()),
                ),
                Span::raw(r.checkpoints.to_string()),
                Span::styled(r.message.clone(), Style::default().fg(theme.dim)),
            ])
        })
        .collect();
    Table::new(
        rows,
        [
            Constraint::Length(24),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(11),
            Constraint::Min(10),
        ],
    )
    .header(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(v: &Overview) -> String {
        crate::tui::widgets::testing::render(110, 20, |f| {
            draw(f, f.area(), v, &Theme::default_theme())
        })
    }

    #[test]
    fn shows_device_configs_and_runs() {
        let mut v = Overview {
            device: "cpu (2 threads)".into(),
            dataset: None,
            configs: vec!["tiny".into()],
            checkpoint_dir: PathBuf::from("/ck"),
            runs: vec![],
        };
        let s = screen(&v);
        assert!(s.contains("device cpu (2 threads)"), "{s}");
        assert!(s.contains("no runs yet"), "{s}");
        v.runs.push(RunSummary {
            name: "tiny-1".into(),
            path: PathBuf::from("/ck/tiny-1"),
            state: "running".into(),
            step: 120,
            total_steps: 300,
            message: "step 120/300 loss 5.01".into(),
            last_val_loss: Some(5.1453),
            checkpoints: 1,
        });
        let s = screen(&v);
        assert!(
            s.contains("tiny-1")
                && s.contains("running")
                && s.contains("120/300")
                && s.contains("5.1453"),
            "{s}"
        );
    }
}
