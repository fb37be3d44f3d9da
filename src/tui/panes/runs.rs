//! The Runs pane: every run under the checkpoint dir, the selected run's curves, progress,
//! config and log; starting (through the queue), stopping, killing, resuming and deleting
//! trainings. Trainings are separate processes in their own sessions: this pane only reads
//! their run folders and signals them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::SystemTime;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, TableState};
use ratatui::Frame;

use super::Pane;
use crate::runs::process;
use crate::runs::queue::{self, Queue, QueuedRun, Request};
use crate::runs::registry::{Phase, Registry, RunEntry};
use crate::tui::action::{Action, Handled};
use crate::tui::config::{LabConfig, Window, RUN_KEYS};
use crate::tui::series;
use crate::tui::theme::Theme;
use crate::tui::widgets::form::{Field, Form, FormResult};
use crate::tui::widgets::log_view::LogTail;
use crate::tui::widgets::loss_chart::{ChartView, Curve};
use crate::tui::widgets::progress::Progress;
use crate::tui::widgets::run_table::RunRow;
use crate::tui::widgets::{dialog, form, log_view, loss_chart, progress, run_table};

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

struct Spawned {
    name: String,
    device: String,
    child: Child,
}

pub struct RunsPane {
    pub root: PathBuf,
    pub config_dir: PathBuf,
    /// The device new runs train on.
    pub device: String,
    /// The stacklab binary trainings are started with.
    pub exe: PathBuf,
    pub lab: LabConfig,
    pub registry: Registry,
    queue: Queue,
    pub queued: Vec<QueuedRun>,
    children: Vec<Spawned>,
    /// Trainings started from the queue by another process (an ending training, another
    /// lab) that have not written their status yet.
    started_elsewhere: Vec<String>,
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
    pub message: Option<(String, bool)>,
    /// A fixed "now" (tests); the clock otherwise.
    pub now: Option<SystemTime>,
    last_second: u64,
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
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("stacklab")),
            lab,
            registry: Registry::new(root),
            queue: Queue::new(root),
            queued: Vec::new(),
            children: Vec::new(),
            started_elsewhere: Vec::new(),
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
            message: None,
            now: None,
            last_second: 0,
        }
    }

    fn now(&self) -> SystemTime {
        self.now.unwrap_or_else(SystemTime::now)
    }

    fn child(&self, name: &str) -> Option<&Spawned> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The phase shown for a run: queued, starting (our child, no status of its own yet),
    /// else what its folder and process say.
    pub fn phase(&self, name: &str) -> Phase {
        if self.queued.iter().any(|q| q.name == name) {
            return Phase::Queued;
        }
        let child = self.child(name);
        match (self.registry.get(name), child) {
            (Some(e), Some(c)) => match &e.status {
                Some(st) if st.pid == c.child.id() => e.phase(),
                _ => Phase::Starting,
            },
            (Some(e), None)
                if e.status.is_none() && self.started_elsewhere.iter().any(|n| n == name) =>
            {
                Phase::Starting
            }
            (Some(e), None) => e.phase(),
            (None, Some(_)) => Phase::Starting,
            (None, None) => Phase::Corrupt,
        }
    }

    pub fn selected_entry(&self) -> Option<&RunEntry> {
        self.registry.get(self.selected.as_deref()?)
    }

    /// Checks the run folders, the queue and the children; starts queued runs that have a
    /// slot. Returns whether anything shown changed.
    pub fn tick(&mut self) -> bool {
        let mut changed = self.reap();
        changed |= self.registry.refresh();
        let queued = self.queue.list();
        if queued
            .iter()
            .map(|q| &q.name)
            .ne(self.queued.iter().map(|q| &q.name))
        {
            changed = true;
        }
        self.queued = queued;
        let elsewhere: Vec<String> = crate::runs::launch::starting(&self.root)
            .into_iter()
            .map(|s| s.name)
            .collect();
        changed |= elsewhere != self.started_elsewhere;
        self.started_elsewhere = elsewhere;
        changed |= self.start_ready();
        changed |= self.sync_log();
        // Ages and the ETA move while something runs: redraw once a second then.
        let second = self
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let active = self.order.iter().any(|n| self.phase(n).is_active());
        if active && second != self.last_second {
            changed = true;
        }
        self.last_second = second;
        if changed {
            self.rebuild_order();
        }
        changed
    }

    /// Waits for children that ended, so none is left a zombie.
    fn reap(&mut self) -> bool {
        let mut changed = false;
        let mut i = 0;
        while i < self.children.len() {
            match self.children[i].child.try_wait() {
                Ok(None) => i += 1,
                Ok(Some(status)) => {
                    let c = self.children.remove(i);
                    changed = true;
                    let has_status = self
                        .registry
                        .get(&c.name)
                        .is_some_and(|e| e.status.is_some());
                    if !status.success() && status.code() != Some(130) && !has_status {
                        let out = std::fs::read_to_string(output_log(&self.root, &c.name))
                            .unwrap_or_default();
                        let last = out
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("no output");
                        self.message = Some((format!("{} did not start: {last}", c.name), true));
                    }
                    tracing::info!(run = %c.name, %status, "training process ended");
                }
                Err(_) => {
                    self.children.remove(i);
                }
            }
        }
        changed
    }

    /// Trainings running per device: running runs, and our children that have not said so yet.
    fn busy(&self) -> HashMap<String, usize> {
        let mut busy = HashMap::new();
        for e in self.registry.runs.values() {
            if e.phase() == Phase::Running {
                let d = e.device().unwrap_or(&self.device).to_string();
                *busy.entry(d).or_insert(0) += 1;
            }
        }
        for c in &self.children {
            if self.registry.get(&c.name).map(|e| e.phase()) != Some(Phase::Running) {
                *busy.entry(c.device.clone()).or_insert(0) += 1;
            }
        }
        for s in crate::runs::launch::starting(&self.root) {
            if self.child(&s.name).is_none() {
                *busy.entry(s.device).or_insert(0) += 1;
            }
        }
        busy
    }

    fn start_ready(&mut self) -> bool {
        let ready = queue::ready(&self.queued, &self.busy(), self.lab.max_concurrent_runs);
        let mut changed = false;
        for q in ready {
            if !self.queue.take(&q) {
                continue;
            }
            changed = true;
            self.queued.retain(|x| x.name != q.name);
            let args = q.train_args(&self.root);
            match crate::runs::launch::spawn_request(&self.root, &self.exe, &q) {
                Ok(child) => {
                    tracing::info!(run = %q.name, pid = child.id(), ?args, "started a training");
                    self.message =
                        Some((format!("started {} (pid {})", q.name, child.id()), false));
                    self.children.push(Spawned {
                        name: q.name.clone(),
                        device: q.device.clone(),
                        child,
                    });
                }
                Err(e) => self.message = Some((format!("cannot start {}: {e:#}", q.name), true)),
            }
        }
        changed
    }

    fn log_path(&self) -> Option<PathBuf> {
        let name = self.selected.as_deref()?;
        Some(match self.log_source {
            LogSource::Train => self.root.join(name).join(crate::runs::run_dir::LOG_FILE),
            LogSource::Output => output_log(&self.root, name),
        })
    }

    /// Follows the selected run's log (a new tail when the selection or source changed).
    fn sync_log(&mut self) -> bool {
        let path = self
            .log_path()
            .unwrap_or_else(|| PathBuf::from("(no run selected)"));
        let mut changed = false;
        if path != self.log.path {
            let search = std::mem::take(&mut self.log.search);
            self.log = LogTail::new(&path, LOG_CAP);
            self.log.search = search;
            changed = true;
        }
        changed | self.log.refresh()
    }

    pub fn rebuild_order(&mut self) {
        let mut names: Vec<String> = self.registry.runs.keys().cloned().collect();
        let waiting = self.queued.iter().map(|q| &q.name);
        for n in waiting.chain(self.children.iter().map(|c| &c.name)) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let f = self.filter.to_lowercase();
        names.retain(|n| f.is_empty() || n.to_lowercase().contains(&f));
        match self.sort {
            Sort::Name => names.sort(),
            Sort::State => names.sort_by_key(|n| (self.phase(n), n.clone())),
            Sort::Age => names
                .sort_by_key(|n| std::cmp::Reverse(self.registry.get(n).and_then(|e| e.updated))),
            Sort::ValLoss => names.sort_by(|a, b| {
                let v = |n: &str| self.registry.get(n).and_then(|e| e.last_val_loss());
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

    fn select_by(&mut self, delta: i64) {
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
                let e = self.registry.get(n);
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
                }
            })
            .collect()
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
        if let Some(e) = self.registry.get(sel) {
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
            if let Some(e) = self.registry.get(p) {
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
        if let Some(q) = self.queued.iter().find(|q| q.name == name) {
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
        let Some(e) = self.registry.get(name) else {
            return vec![format!("{name}: starting")];
        };
        if e.status.is_none() {
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
        let mut first = format!(
            "{} · {}L x {} ({} heads) seq {} · {} steps · seed {} · norms {}/{}",
            e.device().unwrap_or("-"),
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

    fn notify(&mut self, msg: impl Into<String>, error: bool) {
        self.message = Some((msg.into(), error));
    }

    fn new_run_form(&self) -> Form {
        let mut configs: Vec<String> = std::fs::read_dir(&self.config_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let stem = p.file_stem()?.to_string_lossy().into_owned();
                (p.extension()? == "toml" && stem != "lab").then_some(stem)
            })
            .collect();
        configs.sort();
        let mut models = vec!["(config's)".to_string(), "none".to_string()];
        models.extend(
            self.registry
                .runs
                .values()
                .filter(|e| e.checkpoints > 0)
                .map(|e| e.name.clone()),
        );
        let norms = || {
            ["(config's)", "none", "rms_norm", "layer_norm"]
                .map(String::from)
                .to_vec()
        };
        let mut form = Form::new(
            "new run",
            vec![
                Field::choice("config", "config", configs, ""),
                Field::text("name", "name", "", ""),
                Field::text("seed", "seed", "", "(config's)"),
                Field::choice("from_model", "from_model", models, ""),
                Field::choice("norm_wte", "norm_wte", norms(), ""),
                Field::choice("norm_lm_head", "norm_lm_head", norms(), ""),
                Field::text("steps", "steps", "", "(config's)"),
                Field::text("coconut", "coconut.every", "", "(config's)"),
            ],
        );
        let name = self.default_name(form.get("config"));
        form.set_text("name", &name);
        form
    }

    fn default_name(&self, config: &str) -> String {
        let base = format!("{config}-{}", chrono::Local::now().format("%m%d-%H%M%S"));
        let mut name = base.clone();
        let mut i = 2;
        while self.root.join(&name).exists() || self.queued.iter().any(|q| q.name == name) {
            name = format!("{base}-{i}");
            i += 1;
        }
        name
    }

    /// Checks the form like `train` would, then queues the run.
    fn submit_new(&mut self, form: &Form) -> Result<String, String> {
        let config = form.get("config").to_string();
        let name = form.get("name").trim().to_string();
        if config.is_empty() {
            return Err(format!("no configs in {}", self.config_dir.display()));
        }
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(format!("name `{name}`: not usable as a folder name"));
        }
        if self.root.join(&name).exists() || self.queued.iter().any(|q| q.name == name) {
            return Err(format!("run `{name}` already exists"));
        }
        let mut sets = Vec::new();
        let text = |k: &str| form.get(k).trim().to_string();
        for (k, key) in [
            ("seed", "seed"),
            ("steps", "schedule.steps"),
            ("coconut", "coconut.every"),
        ] {
            let v = text(k);
            if !v.is_empty() {
                if v.parse::<i64>().is_err() {
                    return Err(format!("{key}: `{v}` is not a whole number"));
                }
                sets.push(format!("{key}={v}"));
            }
        }
        match form.get("from_model") {
            "(config's)" => {}
            "none" => sets.push("from_model=".into()),
            m => sets.push(format!("from_model={m}")),
        }
        for k in ["norm_wte", "norm_lm_head"] {
            let v = form.get(k);
            if v != "(config's)" {
                sets.push(format!("model.{k}={v}"));
            }
        }
        let path = self.config_dir.join(format!("{config}.toml"));
        crate::config::TrainConfig::load(&path, &sets).map_err(|e| format!("{e:#}"))?;
        let q = QueuedRun::new(
            &name,
            &self.device,
            Request::New {
                config: path.display().to_string(),
                sets,
            },
        );
        self.queue.push(&q).map_err(|e| format!("{e:#}"))?;
        Ok(name)
    }

    fn resume(&mut self, name: &str) {
        let phase = self.phase(name);
        if !phase.resumable() {
            return self.notify(
                format!(
                    "{name} is {}: only stopped, failed or lost runs resume",
                    phase.as_str()
                ),
                true,
            );
        }
        let q = QueuedRun::new(name, &self.device, Request::Resume);
        match self.queue.push(&q) {
            Ok(_) => self.notify(format!("{name}: resume queued"), false),
            Err(e) => self.notify(format!("{e:#}"), true),
        }
        self.tick();
    }

    /// Signals a run's training: by its status (pid and start time), or our child's pid.
    fn signal(&mut self, name: &str, sig: i32) -> anyhow::Result<()> {
        if let Some(e) = self
            .registry
            .get(name)
            .filter(|e| e.phase() == Phase::Running)
        {
            return crate::runs::control::signal_run(e, sig);
        }
        // Our child that has not written its status yet: its pid cannot be reused before
        // we reap it.
        let c = self
            .child(name)
            .ok_or_else(|| anyhow::anyhow!("{name} is not running"))?;
        process::signal_training(c.child.id(), None, sig)
    }

    fn confirmed(&mut self, c: Confirm) {
        match c {
            Confirm::Stop(n) => match self.signal(&n, libc::SIGTERM) {
                Ok(()) => self.notify(
                    format!("{n}: stopping (it checkpoints, then ends stopped)"),
                    false,
                ),
                Err(e) => self.notify(format!("{e:#}"), true),
            },
            Confirm::Kill(n) => self.overlay = Some(Overlay::Confirm(Confirm::KillSure(n))),
            Confirm::KillSure(n) => match self.signal(&n, libc::SIGKILL) {
                Ok(()) => self.notify(
                    format!("{n}: killed (resumable from its last checkpoint)"),
                    false,
                ),
                Err(e) => self.notify(format!("{e:#}"), true),
            },
            Confirm::Delete(n) => {
                let phase = self.phase(&n);
                if phase.is_active() || phase == Phase::Corrupt {
                    return self.notify(format!("{n} is {}: not deleted", phase.as_str()), true);
                }
                let r = crate::runs::control::remove_run(&self.root, &n).map(|_| ());
                let _ = std::fs::remove_file(output_log(&self.root, &n));
                match r {
                    Ok(()) => self.notify(format!("deleted {n}"), false),
                    Err(e) => self.notify(format!("cannot delete {n}: {e}"), true),
                }
                self.pinned.retain(|p| p != &n);
            }
            Confirm::Cancel(n) => match self.queue.remove(&n) {
                Ok(()) => self.notify(format!("{n}: taken off the queue"), false),
                Err(e) => self.notify(format!("{e:#}"), true),
            },
        }
        self.tick();
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

    fn key_for(&self, action: &str) -> char {
        self.lab.key(action)
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

impl Pane for RunsPane {
    fn title(&self) -> &str {
        "Runs"
    }

    fn captures_input(&self) -> bool {
        self.input != Input::None || self.overlay.is_some()
    }

    fn handle_key(&mut self, k: KeyEvent) -> Handled {
        if let Some(overlay) = self.overlay.take() {
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
            return Handled::Yes;
        }
        if self.input != Input::None {
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

    fn update(&mut self, action: &Action) -> bool {
        match action {
            Action::Tick => self.tick(),
            _ => false,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let rows = self.rows();
        let mut title = format!("runs · {}", self.root.display());
        if self.sort != Sort::Name {
            title.push_str(&format!(" · by {}", self.sort.as_str()));
        }
        if self.input == Input::Filter || !self.filter.is_empty() {
            let cursor = if self.input == Input::Filter { "_" } else { "" };
            title = format!("runs · /{}{cursor}", self.filter);
        }
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
        let lines: Vec<Line> = self
            .info_lines()
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
            .collect();
        f.render_widget(Paragraph::new(lines), info);
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
