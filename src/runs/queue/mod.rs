//! The run queue: trainings waiting for a free slot on their device. It lives in the
//! checkpoint dir (`.queue/`, one JSON file per request), not in the lab's memory, so a
//! queued run survives a closed lab and starts when any lab sees a slot free.
//!
//! Every decision on the queue (adding a request, choosing and starting what fits) is made
//! under the queue's lock (`.queue/.lock`), so two labs and the trainings that end never
//! start more than `max_concurrent_runs` between them, nor queue one name twice. A request
//! is claimed by a rename and removed only once its training has started, so a crash in
//! between loses nothing (`claim.rs`).

mod claim;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use claim::{Claim, QueueLock};

use crate::jobs::request::{TrainRequest, TrainStart};

pub const QUEUE_DIR: &str = ".queue";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Request {
    /// `stacklab train --config CONFIG --name NAME --set ...`
    New {
        config: String,
        #[serde(default)]
        sets: Vec<String>,
    },
    /// `stacklab train --resume RUN_DIR`
    Resume,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRun {
    /// The run's name (its folder under the checkpoint dir).
    pub name: String,
    pub device: String,
    pub request: Request,
    pub queued_at: String,
    /// Processes to train in (`train --nproc`); one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc: Option<usize>,
    /// The queue file (not stored in it).
    #[serde(skip)]
    pub file: PathBuf,
}

impl QueuedRun {
    pub fn new(name: &str, device: &str, request: Request) -> QueuedRun {
        QueuedRun {
            name: name.to_string(),
            device: device.to_string(),
            request,
            queued_at: chrono::Local::now().to_rfc3339(),
            nproc: None,
            file: PathBuf::new(),
        }
    }

    /// The `train` request that runs this queued one under the checkpoint dir `root`.
    pub fn train_request(&self, root: &Path) -> TrainRequest {
        TrainRequest {
            start: match &self.request {
                Request::New { config, sets } => TrainStart::New {
                    config: config.clone(),
                    name: Some(self.name.clone()),
                    sets: sets.clone(),
                },
                Request::Resume => TrainStart::Resume(root.join(&self.name)),
            },
            stop_after: None,
            device: self.device.clone(),
            checkpoint_dir: None,
            nproc: self.nproc,
        }
    }

    /// The arguments of `stacklab` that run this request.
    pub fn train_args(&self, root: &Path) -> Vec<String> {
        self.train_request(root).to_args()
    }
}

pub struct Queue {
    pub dir: PathBuf,
}

impl Queue {
    /// The queue of the checkpoint dir `root`.
    pub fn new(root: &Path) -> Queue {
        Queue {
            dir: root.join(QUEUE_DIR),
        }
    }

    /// Waiting requests, oldest first. Unreadable files are skipped (and left alone).
    pub fn list(&self) -> Vec<QueuedRun> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(&f).ok()?;
                let mut q: QueuedRun = serde_json::from_str(&text).ok()?;
                q.file = f;
                Some(q)
            })
            .collect()
    }

    /// The checkpoint dir the queue belongs to.
    pub fn root(&self) -> &Path {
        self.dir.parent().unwrap_or(Path::new("."))
    }

    /// Whether a request for `name` waits or is being started.
    pub fn contains(&self, name: &str) -> bool {
        self.list().iter().any(|q| q.name == name) || self.claimed().iter().any(|q| q.name == name)
    }

    /// Adds a request at the end of the queue. Refused for a name that is not a run name,
    /// is queued already, names an existing folder (a new run), or a run a training holds
    /// (a resume).
    pub fn push(&self, q: &QueuedRun) -> Result<PathBuf> {
        super::run_dir::check_run_name(&q.name)?;
        let _lock = self.lock()?;
        if self.contains(&q.name) {
            bail!("`{}` is already queued", q.name);
        }
        let run = self.root().join(&q.name);
        match q.request {
            Request::New { .. } if run.exists() => bail!(
                "run `{}` already exists at {}: choose another name",
                q.name,
                run.display()
            ),
            Request::Resume => {
                if let Some(h) = super::lock::training(&run) {
                    bail!(
                        "cannot queue a resume: run `{}` is {}",
                        q.name,
                        h.describe()
                    );
                }
            }
            _ => {}
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let file = self.dir.join(format!("{nanos:024}-{}.json", q.name));
        crate::paths::write_atomic(&file, serde_json::to_string_pretty(q)?.as_bytes())?;
        Ok(file)
    }

    /// Removes a waiting request by run name (a cancel).
    pub fn remove(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let q = self
            .list()
            .into_iter()
            .find(|q| q.name == name)
            .with_context(|| format!("`{name}` is not queued"))?;
        std::fs::remove_file(&q.file).with_context(|| format!("cannot remove {}", q.file.display()))
    }
}

/// A request's device when it may run on any of the lab's devices.
pub const ANY_DEVICE: &str = "any";

/// Where queued trainings may run: the lab's devices (lab.toml's `devices`, default every
/// GPU or the CPU) and how many trainings each takes at once (`max_concurrent_runs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub devices: Vec<String>,
    pub max_per_device: usize,
}

impl Capacity {
    pub fn of(lab: &crate::config::lab::LabConfig) -> Capacity {
        Capacity {
            devices: lab.devices(),
            max_per_device: lab.max_concurrent_runs,
        }
    }
}

/// The requests that may start now: in queue order, as long as their device has fewer than
/// `max_per_device` trainings running (`running` counts trainings per device, including the
/// ones picked here). A request for any device gets the least busy of `cap.devices` that
/// has a slot (the first listed among equals); one in several processes (`nproc`) for any
/// device takes as many distinct GPUs at once. The request returned names its device, or
/// its GPUs as `cuda:1,cuda:3` (`train --device cuda:1,cuda:3 --nproc 2`: process k on the
/// k-th). A request in several processes that must wait keeps the GPUs it waits for from
/// the requests behind it ([`reserve`]).
pub fn ready(
    queue: &[QueuedRun],
    running: &std::collections::HashMap<String, usize>,
    cap: &Capacity,
) -> Vec<QueuedRun> {
    let max = cap.max_per_device.max(1);
    let mut busy = running.clone();
    let mut out = Vec::new();
    for q in queue {
        let Some(devices) = placement(q, &busy, cap, max) else {
            reserve(q, &mut busy, cap, max);
            continue;
        };
        for d in &devices {
            *busy.entry(d.clone()).or_insert(0) += 1;
        }
        out.push(QueuedRun {
            device: devices.join(","),
            ..q.clone()
        });
    }
    out
}

/// Keeps the GPUs from the requests behind a request in several processes that must wait:
/// it waits only while fewer than `nproc` GPUs have a free slot, and one-GPU requests behind
/// it would take those one by one and could starve it. So every GPU counts as full for
/// them (first come, first served on the GPUs) and it starts as soon as enough are free;
/// requests for the CPU still start.
fn reserve(
    q: &QueuedRun,
    busy: &mut std::collections::HashMap<String, usize>,
    cap: &Capacity,
    max: usize,
) {
    if q.nproc.unwrap_or(1) < 2 || q.device != ANY_DEVICE {
        return;
    }
    for d in cap.devices.iter().filter(|d| d.starts_with("cuda:")) {
        busy.insert(d.clone(), max);
    }
}

/// Where `q` may start now, under `busy`: its device, or the least busy free one of
/// `cap.devices`, or the `nproc` least busy free GPUs.
fn placement(
    q: &QueuedRun,
    busy: &std::collections::HashMap<String, usize>,
    cap: &Capacity,
    max: usize,
) -> Option<Vec<String>> {
    let load = |d: &str| busy.get(d).copied().unwrap_or(0);
    let width = q.nproc.unwrap_or(1);
    let on_gpus = q.device == ANY_DEVICE && cap.devices.iter().any(|d| d.starts_with("cuda:"));
    if width > 1 && on_gpus {
        let mut gpus: Vec<&str> = Vec::new();
        for d in cap.devices.iter().filter(|d| d.starts_with("cuda:")) {
            if load(d) < max && !gpus.contains(&d.as_str()) {
                gpus.push(d);
            }
        }
        gpus.sort_by_key(|d| load(d));
        return (gpus.len() >= width)
            .then(|| gpus[..width].iter().map(|d| d.to_string()).collect());
    }
    let device = if q.device == ANY_DEVICE {
        cap.devices
            .iter()
            .filter(|d| load(d) < max)
            .min_by_key(|d| load(d))?
            .clone()
    } else {
        q.device.clone()
    };
    (load(&device) < max).then(|| vec![device])
}

#[cfg(test)]
mod tests;
