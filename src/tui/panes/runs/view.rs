//! What the Runs pane shows: the list's order and selection, its rows, the selected run's
//! curves, progress and info lines, and drawing the whole pane.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{Confirm, Input, LogSource, Overlay, RunsPane, Sort};
use crate::runs::queue::Request;
use crate::runs::registry::{Phase, RunEntry};
use crate::tui::series;
use crate::tui::theme::Theme;
use crate::tui::widgets::loss_chart::Curve;
use crate::tui::widgets::progress::Progress;
use crate::tui::widgets::run_table::RunRow;
use crate::tui::widgets::{dialog, form, log_view, loss_chart, progress, run_table};

impl RunsPane {
    pub fn rebuild_order(&mut self) {
        let mut names: Vec<String> = self.trainings.registry.runs.keys().cloned().collect();
        let waiting = self.trainings.queued.iter().map(|q| &q.name);
        for n in waiting.chain(self.trainings.children.iter().map(|c| &c.name)) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let f = self.filter.to_lowercase();
        names.retain(|n| f.is_empty() || n.to_lowercase().contains(&f));
        match self.sort {
            Sort::Name => names.sort(),
            Sort::State => names.sort_by_key(|n| (self.phase(n), n.clone())),
            Sort::Age => names.sort_by_key(|n| {
                std::cmp::Reverse(self.trainings.registry.get(n).and_then(|e| e.updated))
            }),
            Sort::ValLoss => names.sort_by(|a, b| {
                let v = |n: &str| {
                    self.trainings
                        .registry
                        .get(n)
                        .and_then(|e| e.last_val_loss())
                };
                match (v(a), v(b)) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => a.cmp(b),
                }
            }),
        }
        self.order = names;
        let idx = self
            .selected
            .as_ref()
            .and_then(|s| self.order.iter().position(|n| n == s))
            .or_else(|| {
                (!self.order.is_empty())
                    .then_some(0)
                    .map(|i| self.table.selected().unwrap_or(i).min(self.order.len() - 1))
            });
        self.table.select(idx);
        self.selected = idx.map(|i| self.order[i].clone());
        self.sync_log();
    }

    pub(super) fn select_by(&mut self, delta: i64) {
        if self.order.is_empty() {
            return;
        }
        let i = self.table.selected().unwrap_or(0) as i64 + delta;
        let i = i.clamp(0, self.order.len() as i64 - 1) as usize;
        self.table.select(Some(i));
        self.selected = Some(self.order[i].clone());
        self.sync_log();
    }

    pub fn rows(&self) -> Vec<RunRow> {
        let now = self.now();
        self.order
            .iter()
            .map(|n| {
                let e = self.trainings.registry.get(n);
                RunRow {
                    name: n.clone(),
                    phase: self.phase(n),
                    step: e.map(|e| e.step()).unwrap_or(0),
                    total_steps: e.map(|e| e.total_steps()).unwrap_or(0),
                    train_loss: e.and_then(|e| e.last_train_loss()),
                    val_loss: e.and_then(|e| e.last_val_loss()),
                    tokens_per_s: e.and_then(|e| e.tokens_per_s()),
                    age_s: e
                        .and_then(|e| e.updated)
                        .and_then(|u| now.duration_since(u).ok())
                        .map(|d| d.as_secs_f64()),
                    size_bytes: e.map(|e| e.size_bytes),
                    pinned: self.pinned.contains(n),
                    device: self.device_of(n),
                    gpu_memory: self.gpu_use.get(n).and_then(|u| u.memory_bytes),
                }
            })
            .collect()
    }

    /// The device a run trains on (its lock or status), or is queued for.
    fn device_of(&self, name: &str) -> Option<String> {
        let e = self.trainings.registry.get(name);
        e.and_then(|e| e.device().map(String::from)).or_else(|| {
            let q = self.trainings.queued.iter().find(|q| q.name == name)?;
            Some(q.device.clone())
        })
    }

    /// "GPU mem 3.0 GiB on GPU 0, 1" for a run with processes on GPUs.
    fn gpu_words(&self, name: &str) -> Option<String> {
        let u = self.gpu_use.get(name)?;
        let gpus: Vec<String> = u.gpus.iter().map(u32::to_string).collect();
        let mem = u
            .memory_bytes
            .map(|b| format!("{:.1} GiB", b as f64 / crate::device::GIB))
            .unwrap_or_else(|| "unknown".into());
        Some(format!("GPU mem {mem} on GPU {}", gpus.join(", ")))
    }

    /// The selected run's curves and the pinned runs' train loss.
    pub fn curves(&self, theme: &Theme) -> Vec<Curve> {
        let mut out = Vec::new();
        let Some(sel) = self.selected.as_deref() else {
            return out;
        };
        let pts = |e: &RunEntry, f: fn(&crate::runs::run_dir::MetricsRow) -> Option<f64>| {
            e.metrics
                .iter()
                .filter_map(|r| f(r).map(|v| (r.step as f64, v)))
                .collect::<Vec<_>>()
        };
        if let Some(e) = self.trainings.registry.get(sel) {
            out.push(Curve {
                label: "train".into(),
                color: theme.run_color(sel),
                points: pts(e, |r| r.train_loss),
                smooth: true,
            });
            out.push(Curve {
                label: "val".into(),
                color: theme.ok,
                points: pts(e, |r| r.val_loss),
                smooth: false,
            });
            let latent = pts(e, |r| r.latent_loss);
            if !latent.is_empty() {
                out.push(Curve {
                    label: "latent".into(),
                    color: theme.warn,
                    points: latent,
                    smooth: true,
                });
            }
        }
        for p in &self.pinned {
            if p == sel {
                continue;
            }
            if let Some(e) = self.trainings.registry.get(p) {
                out.push(Curve {
                    label: p.clone(),
                    color: theme.run_color(p),
                    points: pts(e, |r| r.train_loss),
                    smooth: true,
                });
            }
        }
        out
    }

    pub fn progress(&self) -> Option<Progress> {
        let e = self.selected_entry()?;
        let total = e.total_steps();
        let eta = if self.phase(&e.name) == Phase::Running {
            series::eta_seconds(&e.metrics, total)
        } else {
            None
        };
        let tps = e.metrics.iter().filter_map(|r| r.tokens_per_s);
        let n = e.metrics.len().saturating_sub(400);
        Some(Progress {
            step: e.step(),
            total_steps: total,
            eta_s: eta,
            tokens_per_s: tps.skip(n.min(e.metrics.len())).collect(),
        })
    }

    /// Two lines about the selected run: device, shape, key config values, lineage; then its
    /// message (or why its folder is unreadable).
    pub fn info_lines(&self) -> Vec<String> {
        let Some(name) = self.selected.as_deref() else {
            return vec!["no run selected".into()];
        };
        if let Some(q) = self.trainings.queued.iter().find(|q| q.name == name) {
            let what = match &q.request {
                Request::New { config, sets } => {
                    format!("new run from {config} {}", sets.join(" "))
                }
                Request::Resume => "resume".into(),
            };
            return vec![
                format!(
                    "queued for {} since {}",
                    q.device,
                    q.queued_at.get(11..19).unwrap_or("")
                ),
                what,
            ];
        }
        let Some(e) = self.trainings.registry.get(name) else {
            return vec![format!("{name}: starting")];
        };
        if e.phase() == Phase::Corrupt {
            return vec![
                "not readable as a run (the lab only reads it)".into(),
                format!(
                    "{}: {}",
                    e.path.display(),
                    e.problem.clone().unwrap_or_default()
                ),
            ];
        }
        let v = |k: &str| e.config_value(k).unwrap_or_else(|| "?".into());
        let device = match self.gpu_words(name) {
            Some(g) => format!("{} ({g})", e.device().unwrap_or("-")),
            None => e.device().unwrap_or("-").to_string(),
        };
        let mut first = format!(
            "{device} · {}L x {} ({} heads) seq {} · {} steps · seed {} · norms {}/{}",
            v("model.n_layer"),
            v("model.n_embd"),
            v("model.n_head"),
            v("model.seq_len"),
            v("schedule.steps"),
            v("seed"),
            v("model.norm_wte"),
            v("model.norm_lm_head"),
        );
        let every = e.config_value("coconut.every").unwrap_or_default();
        if !every.is_empty() && every != "0" {
            first.push_str(&format!(" · coconut every {every}"));
        }
        let mut lineage = String::new();
        for (k, label) in [("from_model", "W from"), ("init_from", "init from")] {
            if let Some(p) = e.config_value(k).filter(|p| !p.is_empty()) {
                lineage.push_str(&format!("{label} {p} · "));
            }
        }
        let second = match (&e.problem, &e.status) {
            (Some(p), _) => format!("{lineage}{}: {p}", e.path.display()),
            (None, Some(s)) => format!("{lineage}{} · {} checkpoint(s)", s.message, e.checkpoints),
            (None, None) => lineage,
        };
        vec![first, second]
    }

    fn confirm_text(c: &Confirm) -> (String, Vec<String>) {
        match c {
            Confirm::Stop(n) => ("stop".into(), vec![
                format!("Stop {n} gracefully?"),
                "SIGTERM to its process group: it finishes the step, writes a checkpoint and ends `stopped` (resumable with r).".into(),
            ]),
            Confirm::Kill(n) => ("kill".into(), vec![
                format!("Kill {n}?"),
                "SIGKILL: it ends at once, with no checkpoint of the current step; it shows as lost and resumes from its last checkpoint.".into(),
            ]),
            Confirm::KillSure(n) => ("kill: are you sure?".into(), vec![
                format!("Really kill {n} with SIGKILL?"),
            ]),
            Confirm::Delete(n) => ("delete".into(), vec![
                format!("Delete {n} and all its checkpoints?"),
                "This removes its folder from disk.".into(),
            ]),
            Confirm::Cancel(n) => ("cancel".into(), vec![format!("Take {n} off the queue?")]),
        }
    }

    /// Draws the list, the selected run's details and any dialog (the pane's `draw`).
    /// The run list's title: the folder, the sort, the filter being typed.
    fn list_title(&self) -> String {
        let mut title = format!("runs · {}", self.root.display());
        if self.sort != Sort::Name {
            title.push_str(&format!(" · by {}", self.sort.as_str()));
        }
        if self.input == Input::Filter || !self.filter.is_empty() {
            let cursor = if self.input == Input::Filter { "_" } else { "" };
            title = format!("runs · /{}{cursor}", self.filter);
        }
        title
    }

    /// The selected run's facts: the first line plain, the others dim (red for a problem).
    fn styled_info(&self, theme: &Theme) -> Vec<Line<'static>> {
        self.info_lines()
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let style = if i == 0 {
                    Style::default().fg(theme.text)
                } else if self.selected_entry().is_some_and(|e| e.problem.is_some()) {
                    Style::default().fg(theme.error)
                } else {
                    Style::default().fg(theme.dim)
                };
                Line::from(Span::styled(l, style))
            })
            .collect()
    }

    pub(super) fn draw_pane(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let rows = self.rows();
        let title = self.list_title();
        let wide = area.width >= 110 && area.height >= 20;
        let (list_area, detail) = if wide {
            let [l, r] =
                Layout::horizontal([Constraint::Percentage(42), Constraint::Min(40)]).areas(area);
            (l, r)
        } else {
            let h = (rows.len() as u16 + 3).clamp(4, (area.height / 3).max(4));
            let [l, r] = Layout::vertical([Constraint::Length(h), Constraint::Min(8)]).areas(area);
            (l, r)
        };
        run_table::draw(f, list_area, &rows, &mut self.table, &title, theme);
        let log_h = if detail.height >= 30 {
            10
        } else if detail.height >= 16 {
            6
        } else {
            3
        };
        let [info, chart_area, prog, log_area] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(4),
            Constraint::Length(1),
            Constraint::Length(log_h),
        ])
        .areas(detail);
        f.render_widget(Paragraph::new(self.styled_info(theme)), info);
        let chart_title = self
            .selected
            .clone()
            .map(|n| format!("loss · {n}"))
            .unwrap_or_else(|| "loss".into());
        loss_chart::draw(
            f,
            chart_area,
            &chart_title,
            &self.curves(theme),
            &self.chart,
            theme,
        );
        if let Some(p) = self.progress() {
            progress::draw(f, prog, &p, theme);
        }
        let log_title = match self.log_source {
            LogSource::Train => "train.log",
            LogSource::Output => "process output",
        };
        log_view::draw(f, log_area, log_title, &self.log, theme);
        match &self.overlay {
            Some(Overlay::Confirm(c)) => {
                let (t, text) = RunsPane::confirm_text(c);
                dialog::confirm(f, area, &t, &text, theme);
            }
            Some(Overlay::New(form)) => form::draw(f, area, form, theme),
            None => {}
        }
    }
}
