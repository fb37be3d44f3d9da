//! The Runs pane's new-run form: building it from the config folder and the runs with
//! checkpoints, a free default name, and checking and queueing what was filled in.

use super::RunsPane;
use crate::runs::queue::{QueuedRun, Request};
use crate::tui::widgets::form::{Field, Form};

impl RunsPane {
    pub(super) fn new_run_form(&self) -> Form {
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

    pub(super) fn default_name(&self, config: &str) -> String {
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
    pub(super) fn submit_new(&mut self, form: &Form) -> Result<String, String> {
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
}
