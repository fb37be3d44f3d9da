//! Lineage: which checkpoints other runs name as their `from_model` or `init_from` (in
//! their configs, their checkpoints' metadata, or queued requests), so retention keeps them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::runs::checkpoint::{list_checkpoints, step_of, META_FILE};
use crate::runs::queue::{Queue, Request};
use crate::runs::run_dir::CONFIG_FILE;

/// Checkpoints (`<run>/step_NNNNNN`) that some run's lineage names, with who names them.
#[derive(Debug, Clone, Default)]
pub struct Lineages {
    pub named: BTreeMap<String, Vec<String>>,
}

impl Lineages {
    /// Every `from_model` / `init_from` under the checkpoint dir `root`: runs' configs,
    /// the lineage in their latest checkpoint's metadata, and queued requests.
    pub fn scan(root: &Path) -> Lineages {
        let mut l = Lineages::default();
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            if let Some(cfg) = read_table(&path.join(CONFIG_FILE)) {
                for key in ["from_model", "init_from"] {
                    if let Some(v) = cfg.get(key).and_then(|v| v.as_str()) {
                        l.add(v, format!("run {name}'s config ({key} = \"{v}\")"));
                    }
                }
            }
            // A saved stack is a checkpoint folder itself; a run's lineage is in every one
            // of its checkpoints, so the latest tells.
            let meta = if path.join(META_FILE).is_file() {
                Some(path.join(META_FILE))
            } else {
                list_checkpoints(&path).pop().map(|c| c.join(META_FILE))
            };
            if let Some(meta) = meta.and_then(|m| read_table(&m)) {
                for key in ["from_model", "init_from"] {
                    let parent = meta
                        .get(key)
                        .and_then(|t| t.get("name"))
                        .and_then(|v| v.as_str());
                    if let Some(v) = parent {
                        l.add(v, format!("run {name}'s {key} lineage ({v})"));
                    }
                }
            }
        }
        for q in Queue::new(root).list() {
            if let Request::New { sets, .. } = &q.request {
                for s in sets {
                    for key in ["from_model", "init_from"] {
                        if let Some(v) = s.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                            l.add(v, format!("queued run {}'s {key} ({v})", q.name));
                        }
                    }
                }
            }
        }
        l
    }

    /// Records a reference when it names one checkpoint (`.../RUN/step_NNNNNN`); a run
    /// folder alone means its latest checkpoint, which retention always keeps.
    fn add(&mut self, reference: &str, why: String) {
        let parts: Vec<&str> = reference
            .trim()
            .trim_end_matches('/')
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if let [.., run, ck] = parts[..] {
            if step_of(ck).is_some() {
                let reasons = self.named.entry(format!("{run}/{ck}")).or_default();
                if !reasons.contains(&why) {
                    reasons.push(why);
                }
            }
        }
    }

    /// Why the checkpoint `ck` of `run` must stay, if a lineage names it.
    pub fn why(&self, run: &str, ck: &str) -> Option<String> {
        self.named.get(&format!("{run}/{ck}")).map(|r| r.join("; "))
    }
}

fn read_table(p: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(p).ok()?.parse().ok()
}
