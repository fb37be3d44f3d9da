//! The lab's own settings: `<config dir>/lab.toml` (all keys optional).
//!
//! ```toml
//! theme = "default"           # or light, high-contrast, a user theme's name, a file
//! ascii = false               # the whole screen in ASCII
//! max_concurrent_runs = 1     # trainings at once per device; further starts wait as queued
//! devices = ["cuda:0", "cuda:1"]  # where queued runs may train (default: every GPU, or cpu)
//! new_run_config = "tiny"     # the config the new-run form offers first (default: tiny on
//!                             # the CPU, gpt2-small-seed on a GPU, when they exist)
//!
//! [chart]
//! ema = 0.6                   # smoothing, 0 (none) to 0.99
//! log_y = false
//! window = "all"              # or "recent"
//! recent_steps = 200
//!
//! [keys]                      # the Runs pane's keys, one character each
//! new = "n"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const LAB_FILE: &str = "lab.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabConfig {
    pub theme: Option<String>,
    pub ascii: bool,
    pub max_concurrent_runs: usize,
    /// The devices queued trainings may run on; empty: every GPU, or the CPU.
    pub devices: Vec<String>,
    /// The config (a name in the config dir) the new-run form offers first.
    pub new_run_config: Option<String>,
    pub chart: ChartDefaults,
    pub keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    All,
    Recent,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChartDefaults {
    pub ema: f64,
    pub log_y: bool,
    pub window: Window,
    pub recent_steps: i64,
}

impl Default for ChartDefaults {
    fn default() -> Self {
        ChartDefaults {
            ema: 0.6,
            log_y: false,
            window: Window::All,
            recent_steps: 200,
        }
    }
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            theme: None,
            ascii: false,
            max_concurrent_runs: 1,
            devices: Vec::new(),
            new_run_config: None,
            chart: ChartDefaults::default(),
            keys: BTreeMap::new(),
        }
    }
}

/// The Runs pane's rebindable actions and their default keys.
pub const RUN_KEYS: [(&str, char, &str); 15] = [
    ("new", 'n', "start a run from a config"),
    (
        "stop",
        's',
        "stop gracefully (SIGTERM: checkpoint, end stopped)",
    ),
    ("kill", 'K', "kill (SIGKILL, no checkpoint; asks twice)"),
    ("resume", 'r', "resume a stopped, failed or lost run"),
    ("delete", 'd', "delete a finished run / cancel a queued one"),
    ("filter", '/', "filter the list by name"),
    ("sort", 'o', "sort by name, state, age, val loss"),
    ("pin", 'p', "pin the run onto the chart to compare"),
    ("log_y", 'l', "log-scale y"),
    ("window", 'w', "whole history / recent window"),
    ("smooth_less", '[', "less smoothing"),
    ("smooth_more", ']', "more smoothing"),
    ("follow", 'f', "follow / pause the log"),
    ("search", 'F', "search the log"),
    ("output", 'O', "log: train.log / process output"),
];

impl LabConfig {
    /// The devices queued trainings may run on, by canonical name (`cuda` is `cuda:0`).
    pub fn devices(&self) -> Vec<String> {
        if self.devices.is_empty() {
            return crate::device::slots::every_device();
        }
        let mut out: Vec<String> = Vec::new();
        for d in &self.devices {
            // Checked when the file was read.
            if let Ok(dev) = crate::device::parse_device(d) {
                let name = crate::device::name(dev);
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        out
    }

    pub fn path(config_dir: &Path) -> PathBuf {
        config_dir.join(LAB_FILE)
    }

    /// `<config_dir>/lab.toml`, or the defaults when there is none.
    pub fn load(config_dir: &Path) -> Result<LabConfig> {
        let p = LabConfig::path(config_dir);
        if !p.is_file() {
            return Ok(LabConfig::default());
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        LabConfig::from_toml(&text, &p.display().to_string())
    }

    pub fn from_toml(text: &str, source: &str) -> Result<LabConfig> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("{source}: not valid TOML: {}", e.message())
        })?;
        let cfg: LabConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                anyhow::anyhow!("{source}: `{path}`: {}", e.inner())
            })?;
        if !(0.0..1.0).contains(&cfg.chart.ema) {
            bail!(
                "{source}: `chart.ema`: {} is not allowed; expected 0 (no smoothing) up to 0.99",
                cfg.chart.ema
            );
        }
        if cfg.chart.recent_steps < 2 {
            bail!("{source}: `chart.recent_steps`: expected at least 2");
        }
        if cfg.max_concurrent_runs == 0 {
            bail!("{source}: `max_concurrent_runs`: expected at least 1");
        }
        for d in &cfg.devices {
            crate::device::parse_device(d)
                .with_context(|| format!("{source}: `devices`: `{d}`"))?;
        }
        for (action, key) in &cfg.keys {
            if !RUN_KEYS.iter().any(|(a, _, _)| a == action) {
                bail!(
                    "{source}: `keys.{action}`: unknown action; expected one of: {}",
                    RUN_KEYS.map(|(a, _, _)| a).join(", ")
                );
            }
            if key.chars().count() != 1 {
                bail!("{source}: `keys.{action}`: \"{key}\" is not one character");
            }
        }
        Ok(cfg)
    }

    /// The key of a Runs pane action.
    pub fn key(&self, action: &str) -> char {
        self.keys
            .get(action)
            .and_then(|k| k.chars().next())
            .or_else(|| {
                RUN_KEYS
                    .iter()
                    .find(|(a, _, _)| *a == action)
                    .map(|(_, k, _)| *k)
            })
            .unwrap_or('\0')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_config_defaults_and_errors() {
        let c = LabConfig::from_toml("", "lab.toml").unwrap();
        assert_eq!(c, LabConfig::default());
        assert_eq!(c.key("new"), 'n');
        let c = LabConfig::from_toml(
            "max_concurrent_runs = 2\n[chart]\nwindow = \"recent\"\n[keys]\nnew = \"N\"\n",
            "lab.toml",
        )
        .unwrap();
        assert_eq!((c.max_concurrent_runs, c.chart.window), (2, Window::Recent));
        assert_eq!(c.key("new"), 'N');
        for (text, want) in [
            (
                "max_concurent_runs = 2\n",
                "unknown field `max_concurent_runs`",
            ),
            ("[chart]\nema = 1.5\n", "`chart.ema`: 1.5 is not allowed"),
            (
                "[chart]\nwindow = \"last\"\n",
                "`chart.window`: unknown variant `last`",
            ),
            ("[keys]\nfly = \"x\"\n", "`keys.fly`: unknown action"),
            (
                "[keys]\nnew = \"xy\"\n",
                "`keys.new`: \"xy\" is not one character",
            ),
            (
                "max_concurrent_runs = \"two\"\n",
                "`max_concurrent_runs`: invalid type",
            ),
        ] {
            let e = LabConfig::from_toml(text, "/cfg/lab.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("/cfg/lab.toml: ") && e.contains(want),
                "{want}: {e}"
            );
        }
    }
}
