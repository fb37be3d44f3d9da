//! Every run under a checkpoint dir in one line each, with the facts the lab's Runs pane
//! shows (state, step / total, last losses, tokens/s, age, size on disk, device and GPU
//! memory), from the same [`Registry`], queue and GPU sample: `stacklab runs` prints them as
//! a table or JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use super::gpu_use::RunGpuUse;
use super::launch::{self, Starting};
use super::queue::{Queue, QueuedRun};
use super::registry::{Phase, Registry};

/// Schema name of `stacklab runs --json`.
pub const SCHEMA: &str = "stacklab.runs/1";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFacts {
    pub name: String,
    /// queued, starting, running, lost, stopped, failed, done or corrupt.
    pub state: String,
    pub step: i64,
    pub total_steps: i64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// Seconds since the run last wrote its status (a queued one: since it was queued).
    pub age_s: Option<f64>,
    /// Bytes the folder takes on disk.
    pub size_bytes: u64,
    pub checkpoints: usize,
    pub device: Option<String>,
    /// The GPUs its processes are on, in NVML's (nvidia-smi's) numbering.
    pub gpus: Vec<u32>,
    /// Device memory its processes use on them; null when unknown (no process on a GPU,
    /// no GPU figures, or a process whose memory the driver does not report).
    pub gpu_memory_bytes: Option<u64>,
    /// The training's process, while it runs.
    pub pid: Option<u32>,
    /// The status's last message.
    pub message: String,
    /// Why the folder is not (entirely) readable as a run.
    pub problem: Option<String>,
    pub path: String,
}

/// The phase a run shows: queued, starting (started from the queue, no status of its own
/// yet), else what its folder and process say.
fn phase(name: &str, reg: &Registry, queued: &[QueuedRun], starting: &[Starting]) -> Phase {
    if queued.iter().any(|q| q.name == name) {
        Phase::Queued
    } else if starting.iter().any(|s| s.name == name) {
        Phase::Starting
    } else {
        reg.get(name).map(|e| e.phase()).unwrap_or(Phase::Corrupt)
    }
}

/// The runs of a refreshed registry, the queued requests and the starting trainings, by
/// name, with what each uses of the GPUs.
pub fn facts(
    reg: &Registry,
    queued: &[QueuedRun],
    starting: &[Starting],
    gpu_use: &BTreeMap<String, RunGpuUse>,
    now: SystemTime,
) -> Vec<RunFacts> {
    let mut names: Vec<&str> = reg.runs.keys().map(String::as_str).collect();
    for n in queued
        .iter()
        .map(|q| q.name.as_str())
        .chain(starting.iter().map(|s| s.name.as_str()))
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.sort_unstable();
    names
        .into_iter()
        .map(|name| {
            let e = reg.get(name);
            let st = e.and_then(|e| e.status.as_ref());
            let phase = phase(name, reg, queued, starting);
            let queued_at = queued
                .iter()
                .find(|q| q.name == name)
                .and_then(|q| chrono::DateTime::parse_from_rfc3339(&q.queued_at).ok())
                .map(SystemTime::from);
            let updated = match phase {
                Phase::Queued => queued_at,
                _ => e.and_then(|e| e.updated),
            };
            let pid = match phase {
                Phase::Running => e.and_then(|e| e.training()).map(|(pid, _)| pid),
                Phase::Starting => starting.iter().find(|s| s.name == name).map(|s| s.pid),
                _ => None,
            };
            RunFacts {
                name: name.to_string(),
                state: phase.as_str().to_string(),
                step: e.map(|e| e.step()).unwrap_or(0),
                total_steps: e.map(|e| e.total_steps()).unwrap_or(0),
                train_loss: e.and_then(|e| e.last_train_loss()),
                val_loss: e.and_then(|e| e.last_val_loss()),
                tokens_per_s: e.and_then(|e| e.tokens_per_s()),
                age_s: updated
                    .and_then(|u| now.duration_since(u).ok())
                    .map(|d| d.as_secs_f64()),
                size_bytes: e.map(|e| e.size_bytes).unwrap_or(0),
                checkpoints: e.map(|e| e.checkpoints).unwrap_or(0),
                device: e
                    .and_then(|e| e.device().map(String::from))
                    .or_else(|| {
                        queued
                            .iter()
                            .find(|q| q.name == name)
                            .map(|q| q.device.clone())
                    })
                    .or_else(|| {
                        starting
                            .iter()
                            .find(|s| s.name == name)
                            .map(|s| s.device.clone())
                    }),
                gpus: gpu_use
                    .get(name)
                    .map(|u| u.gpus.clone())
                    .unwrap_or_default(),
                gpu_memory_bytes: gpu_use.get(name).and_then(|u| u.memory_bytes),
                pid,
                message: st.map(|s| s.message.clone()).unwrap_or_default(),
                problem: e
                    .and_then(|e| e.problem.clone())
                    .filter(|_| phase != Phase::Starting),
                path: e.map(|e| e.path.display().to_string()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Every run under the checkpoint dir `root` now, with `gpus` (one GPU sample, its
/// processes mapped to runs).
pub fn list(root: &Path, gpus: &[crate::system::GpuFigures]) -> Vec<RunFacts> {
    let mut reg = Registry::new(root);
    reg.refresh();
    let queued = Queue::new(root).list();
    let starting = launch::starting(root);
    let gpu_use = super::gpu_use::by_run(gpus);
    facts(&reg, &queued, &starting, &gpu_use, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::queue::Request;
    use crate::runs::run_dir::{MetricsRow, RunDir, RunState, RunStatus};

    #[test]
    fn facts_of_done_queued_resumed_starting_and_corrupt_runs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let run = RunDir::new(root.join("done"));
        std::fs::create_dir_all(&run.path).unwrap();
        std::fs::write(run.config_path(), "seed = 1\n").unwrap();
        run.write_status(&RunStatus {
            state: RunState::Stopped,
            pid: 1,
            step: 4,
            total_steps: 10,
            message: "stopped by a signal".into(),
            updated_at: String::new(),
            start_time: None,
            device: Some("cpu".into()),
            world_size: None,
        })
        .unwrap();
        run.append_metrics(&MetricsRow {
            step: 4,
            train_loss: Some(3.5),
            val_loss: Some(3.75),
            tokens_per_s: Some(1000.0),
            ..Default::default()
        })
        .unwrap();
        std::fs::create_dir_all(root.join("junk")).unwrap();
        let queue = Queue::new(root);
        let req = Request::New {
            config: "tiny".into(),
            sets: vec![],
        };
        queue.push(&QueuedRun::new("new", "cuda:0", req)).unwrap();
        let mut reg = Registry::new(root);
        reg.refresh();
        let starting = vec![Starting {
            name: "fresh".into(),
            device: "cpu".into(),
            pid: 4242,
            start_time: None,
        }];
        let now = SystemTime::now() + std::time::Duration::from_secs(60);
        let mut gpu_use = BTreeMap::new();
        gpu_use.insert(
            "done".to_string(),
            RunGpuUse {
                gpus: vec![1],
                memory_bytes: Some(7),
            },
        );
        let f = facts(&reg, &queue.list(), &starting, &gpu_use, now);
        let names: Vec<(&str, &str)> = f
            .iter()
            .map(|f| (f.name.as_str(), f.state.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("done", "stopped"),
                ("fresh", "starting"),
                ("junk", "corrupt"),
                ("new", "queued")
            ]
        );
        let d = &f[0];
        assert_eq!((d.step, d.total_steps), (4, 10));
        assert_eq!(
            (d.train_loss, d.val_loss, d.tokens_per_s),
            (Some(3.5), Some(3.75), Some(1000.0))
        );
        assert!(d.age_s.unwrap() >= 59.0 && d.pid.is_none());
        assert_eq!((d.gpus.clone(), d.gpu_memory_bytes), (vec![1], Some(7)));
        assert_eq!((f[1].gpus.len(), f[1].gpu_memory_bytes), (0, None));
        assert_eq!(d.size_bytes, crate::runs::disk::disk_size(&run.path));
        assert_eq!(f[1].pid, Some(4242));
        assert!(f[2].problem.as_deref().unwrap().contains("not a run"));
        assert_eq!(f[3].device.as_deref(), Some("cuda:0"));
        assert!(f[3].age_s.unwrap() >= 59.0);

        // A queued resume of an existing run shows as queued, with its folder's facts.
        queue
            .push(&QueuedRun::new("done", "cpu", Request::Resume))
            .unwrap();
        let f = facts(&reg, &queue.list(), &[], &BTreeMap::new(), now);
        assert_eq!((f[0].state.as_str(), f[0].step), ("queued", 4));
    }
}
