//! The Runs pane's new-run form: building it from the config folder and the runs with
//! checkpoints, a free default name, and checking and queueing what was filled in.

use super::RunsPane;
use crate::runs::queue::{QueuedRun, Request};
use crate::tui::widgets::form::{Field, Form};

impl RunsPane {
    pub(super) fn new_run_form(&self) -> Form {
        let configs = training_configs(&self.config_dir);
        let (first, note) = self.first_config(&configs);
        let mut models = vec!["(config's)".to_string(), "none".to_string()];
        models.extend(
            self.trainings
                .registry
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
                Field::text(
                    "steps",
                    "steps",
                    "",
                    "(config's; warmup/warmdown scale along)",
                ),
                Field::text("coconut", "coconut.every", "", "(config's)"),
                Field::choice("device", "device", self.device_choices(), ""),
                Field::text(
                    "processes",
                    "processes",
                    "",
                    "(1; --nproc, divides batch.ranks)",
                ),
            ],
        );
        if let Some(c) = first {
            form.select("config", &c);
        }
        form.error = note;
        let name = self.default_name(form.get("config"));
        form.set_text("name", &name);
        form
    }

    /// Where a run may be queued: any of the lab's devices (the least busy free one when
    /// it starts) or one of them, when there are several; else the lab's device.
    fn device_choices(&self) -> Vec<String> {
        let devices = self.lab.devices();
        if devices.len() > 1 {
            let mut v = vec![crate::runs::queue::ANY_DEVICE.to_string()];
            v.extend(devices);
            v
        } else {
            vec![self.device.clone()]
        }
    }

    /// The device a run is queued for when nobody chose: any of several, else the lab's.
    pub(super) fn queue_device(&self) -> String {
        self.device_choices().swap_remove(0)
    }

    /// The config the form offers first: the one last started from this lab, else
    /// lab.toml's `new_run_config`, else the device's usual one (`tiny`, the embedded
    /// default, on the CPU; `gpt2-small-seed` on a GPU) when it exists. A `new_run_config`
    /// that names no config comes back with a note saying so.
    fn first_config(&self, configs: &[String]) -> (Option<String>, Option<String>) {
        let has = |c: &str| configs.iter().any(|x| x == c);
        if let Some(c) = self.last_config.as_deref().filter(|c| has(c)) {
            return (Some(c.to_string()), None);
        }
        let mut note = None;
        if let Some(c) = self.lab.new_run_config.as_deref() {
            if has(c) {
                return (Some(c.to_string()), None);
            }
            note = Some(format!(
                "lab.toml: `new_run_config`: no training config `{c}` in {}",
                self.config_dir.display()
            ));
        }
        let usual = if self.device.starts_with("cuda") {
            "gpt2-small-seed"
        } else {
            "tiny"
        };
        (has(usual).then(|| usual.to_string()), note)
    }

    pub(super) fn default_name(&self, config: &str) -> String {
        let base = format!("{config}-{}", chrono::Local::now().format("%m%d-%H%M%S"));
        let mut name = base.clone();
        let mut i = 2;
        while self.root.join(&name).exists() || self.trainings.queued.iter().any(|q| q.name == name)
        {
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
        crate::paths::check_folder_name("run name", &name).map_err(|e| e.to_string())?;
        if self.root.join(&name).exists() || self.trainings.queued.iter().any(|q| q.name == name) {
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
        if let Some(steps) = sets.iter().find_map(|s| s.strip_prefix("schedule.steps=")) {
            let steps: i64 = steps.parse().unwrap_or(0);
            let base =
                crate::config::TrainConfig::load(&path, &[]).map_err(|e| format!("{e:#}"))?;
            sets.extend(scaled_schedule(&base.schedule, steps));
        }
        let cfg = crate::config::TrainConfig::load(&path, &sets).map_err(|e| format!("{e:#}"))?;
        let nproc = processes(&text("processes"), cfg.batch.ranks)?;
        let device = match form.get("device") {
            "" => self.queue_device(),
            d => d.to_string(),
        };
        check_placement(nproc, &device, &self.lab.devices())?;
        let mut q = QueuedRun::new(
            &name,
            &device,
            Request::New {
                config: path.display().to_string(),
                sets,
            },
        );
        q.nproc = nproc;
        self.trainings
            .queue
            .push(&q)
            .map_err(|e| format!("{e:#}"))?;
        Ok(name)
    }
}

/// A training in several processes takes one GPU each: it cannot be pinned to one, nor
/// ask for more GPUs than the lab's `devices` has.
fn check_placement(
    nproc: Option<usize>,
    device: &str,
    lab_devices: &[String],
) -> Result<(), String> {
    let Some(n) = nproc else {
        return Ok(());
    };
    if device.starts_with("cuda:") {
        return Err(format!(
            "processes = {n} on {device}: a training in several processes takes one GPU per process; choose device `any` (the queue picks {n} free GPUs)"
        ));
    }
    let gpus = lab_devices
        .iter()
        .filter(|d| d.starts_with("cuda:"))
        .count();
    if device == crate::runs::queue::ANY_DEVICE && gpus > 0 && gpus < n {
        return Err(format!(
            "processes = {n}: the lab has {gpus} GPU(s) (lab.toml's devices), one per process is needed"
        ));
    }
    Ok(())
}

/// The form's "processes" (`train --nproc`): empty or 1 for one process.
fn processes(v: &str, ranks: i64) -> Result<Option<usize>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let n: usize = v
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("processes: `{v}` is not a whole number of at least 1"))?;
    crate::train::parallel::check_world_size(n, ranks, "processes").map_err(|e| e.to_string())?;
    Ok((n > 1).then_some(n))
}

/// The training configs in `dir` by name, sorted: every `*.toml` but `lab.toml` and the sweep
/// definitions (a top-level `train_config` key), which `stacklab sweep` runs instead. A file
/// that is not valid TOML stays listed, so choosing it shows its error.
pub(super) fn training_configs(dir: &std::path::Path) -> Vec<String> {
    let mut configs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            if p.extension()? != "toml" || stem == "lab" {
                return None;
            }
            let sweep = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .is_some_and(|t| t.contains_key("train_config"));
            (!sweep).then_some(stem)
        })
        .collect();
    configs.sort();
    configs
}

/// `--set`s that keep the config's warmup and warmdown the same fractions of a run of
/// `steps` steps instead of `base.steps` (the seed's schedule is a fraction of the run: a
/// shorter run from the form should not fail on a warmdown longer than itself).
pub(super) fn scaled_schedule(base: &crate::config::ScheduleConfig, steps: i64) -> Vec<String> {
    if base.steps <= 0 || steps <= 0 || steps == base.steps {
        return Vec::new();
    }
    let scale = |n: i64| ((n as f64 * steps as f64 / base.steps as f64).round() as i64).min(steps);
    [("warmup", base.warmup), ("warmdown", base.warmdown)]
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(key, n)| format!("schedule.{key}={}", scale(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_processes_cannot_be_pinned_to_one_gpu() {
        let two: Vec<String> = vec!["cuda:0".into(), "cuda:1".into()];
        assert!(check_placement(Some(2), "cuda:1", &two)
            .unwrap_err()
            .contains("choose device `any`"));
        for ok in ["any", "cpu"] {
            assert!(check_placement(Some(2), ok, &two).is_ok(), "{ok}");
        }
        assert!(check_placement(None, "cuda:1", &two).is_ok());
        let e = check_placement(Some(4), "any", &two).unwrap_err();
        assert!(e.contains("the lab has 2 GPU(s)"), "{e}");
        assert!(check_placement(Some(4), "any", &["cpu".to_string()]).is_ok());
        assert_eq!(processes("", 8), Ok(None));
        assert_eq!(processes("1", 8), Ok(None));
        assert_eq!(processes("4", 8), Ok(Some(4)));
        assert!(processes("3", 8).is_err());
        assert!(processes("0", 8).is_err());
    }
}
