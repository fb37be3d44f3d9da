//! Which run a GPU process belongs to, and what each run uses of the GPUs.
//!
//! A training names its process in its run's lock and status (pid and start time). A run in
//! several processes (`train --nproc`) names its launcher, whose children hold the GPU
//! contexts, and its ranks other than 0 record themselves in its folder (torchrun's are
//! not under rank 0); so a GPU process belongs to a run when it, or one of its ancestors,
//! is one of that run's processes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::lock;
use super::registry::{phase_of, Phase};
use super::run_dir::RunDir;
use crate::system::{Folders, GpuFigures, NoGpus, Sample};

/// Ancestors looked through before giving up (a process tree is never this deep).
const MAX_DEPTH: usize = 32;

/// A running training: its run and the process it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Training {
    pub run: String,
    pub pid: u32,
}

/// The trainings running under the checkpoint dir `root`: the live holder of each run's
/// lock, else the live process its status names.
pub fn trainings(root: &Path) -> Vec<Training> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let held = lock::read_holder(&e.path()).filter(|h| h.is_training() && h.alive());
        let pid = held.map(|h| h.pid).or_else(|| {
            let st = RunDir::new(e.path()).read_status().ok()?;
            (phase_of(&st) == Phase::Running).then_some(st.pid)
        });
        if let Some(pid) = pid {
            // Its other ranks too (torchrun's are not under the process it names).
            for rank in super::process::rank_pids(&e.path()) {
                out.push(Training {
                    run: name.clone(),
                    pid: rank,
                });
            }
            out.push(Training { run: name, pid });
        }
    }
    out
}

/// The run whose training is `pid` or an ancestor of it (`parent` gives a process's
/// parent: `/proc/PID/stat` in the lab, a table in tests).
pub fn owner_of(
    pid: u32,
    trainings: &[Training],
    parent: impl Fn(u32) -> Option<u32>,
) -> Option<&str> {
    let mut p = pid;
    for _ in 0..MAX_DEPTH {
        if let Some(t) = trainings.iter().find(|t| t.pid == p) {
            return Some(&t.run);
        }
        p = parent(p).filter(|&q| q > 1 && q != p)?;
    }
    None
}

/// The lab's folders (`STACKLAB_CHECKPOINT_DIR`, `STACKLAB_DATA_DIR`) with what the machine's
/// figures read of its runs: the largest checkpoint, and the run of each GPU process.
pub fn lab_folders() -> Folders {
    Folders {
        largest_checkpoint,
        name_processes: map_processes_to_runs,
        ..Folders::new(crate::paths::checkpoint_dir(), crate::paths::data_dir())
    }
}

/// The size of the largest newest checkpoint of the runs under `root`.
pub fn largest_checkpoint(root: &Path) -> Option<u64> {
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let newest = super::checkpoint::list_checkpoints(&e.path()).pop()?;
            Some(super::disk::disk_size(&newest))
        })
        .max()
}

/// Names the run of every GPU process whose training (or an ancestor process of it) is a
/// running run's under `root`; reads the runs' files only when there are processes.
pub fn map_processes_to_runs(gpus: &mut [GpuFigures], root: &Path) {
    if gpus.iter().all(|g| g.processes.is_empty()) {
        return;
    }
    let trainings = trainings(root);
    for p in gpus.iter_mut().flat_map(|g| g.processes.iter_mut()) {
        p.run = owner_of(p.pid, &trainings, super::process::parent_pid).map(String::from);
    }
}

/// The GPUs now, from the environment's source, their processes mapped to the runs under
/// the checkpoint dir `root`; and what the figures come from.
pub fn gpu_sample(root: &Path) -> (Result<Vec<GpuFigures>, NoGpus>, String) {
    let mut source = crate::system::source_from_env();
    let mut gpus = source.sample();
    if let Ok(g) = &mut gpus {
        map_processes_to_runs(g, root);
    }
    (gpus, source.describe())
}

/// One sample now (for `doctor`); the CPU's busy share is measured over the GPU sample and
/// at least a quarter of a second.
pub fn sample_once(folders: &Folders) -> (Sample, String) {
    let t0 = std::time::Instant::now();
    let mut probe = crate::system::host::HostProbe::new(folders.clone());
    let (gpus, source) = gpu_sample(&folders.checkpoints);
    std::thread::sleep(std::time::Duration::from_millis(250).saturating_sub(t0.elapsed()));
    let host = probe.sample();
    (Sample { gpus, host }, source)
}

/// What a run uses of the GPUs: on which (NVML's numbering) and how much memory in all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunGpuUse {
    pub gpus: Vec<u32>,
    /// The sum over its processes; `None` when any of them has no memory figure.
    pub memory_bytes: Option<u64>,
}

/// Every run with a process on a GPU of `gpus` (processes already named with their run).
pub fn by_run(gpus: &[GpuFigures]) -> BTreeMap<String, RunGpuUse> {
    let mut out: BTreeMap<String, RunGpuUse> = BTreeMap::new();
    for g in gpus {
        for p in &g.processes {
            let Some(run) = &p.run else { continue };
            let use_ = out.entry(run.clone()).or_insert_with(|| RunGpuUse {
                gpus: Vec::new(),
                memory_bytes: Some(0),
            });
            if !use_.gpus.contains(&g.index) {
                use_.gpus.push(g.index);
            }
            use_.memory_bytes = match (use_.memory_bytes, p.memory_bytes) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::GpuProcess;

    fn t(run: &str, pid: u32) -> Training {
        Training {
            run: run.into(),
            pid,
        }
    }

    #[test]
    fn a_process_belongs_to_the_run_of_itself_or_an_ancestor() {
        let trainings = [t("solo", 100), t("ddp", 200)];
        // 201 and 202 are ranks the launcher 200 started; 203 a worker of rank 202;
        // 300 is another user's process under init.
        let parents = |p: u32| match p {
            201 | 202 => Some(200),
            203 => Some(202),
            100 | 200 | 300 => Some(1),
            _ => None,
        };
        assert_eq!(owner_of(100, &trainings, parents), Some("solo"));
        assert_eq!(owner_of(201, &trainings, parents), Some("ddp"));
        assert_eq!(owner_of(203, &trainings, parents), Some("ddp"));
        assert_eq!(owner_of(300, &trainings, parents), None);
        assert_eq!(owner_of(999, &trainings, parents), None, "an unknown pid");
        // A parent loop ends the walk rather than the lab.
        assert_eq!(
            owner_of(5, &trainings, |p| Some(if p == 5 { 6 } else { 5 })),
            None
        );
    }

    #[test]
    fn a_run_sums_its_processes_over_its_gpus() {
        let gpu = |index: u32, procs: Vec<GpuProcess>| GpuFigures {
            processes: procs,
            ..crate::system::nvml::unavailable(index, "no figures in this test")
        };
        let p = |pid: u32, mem: Option<u64>, run: Option<&str>| GpuProcess {
            pid,
            memory_bytes: mem,
            run: run.map(String::from),
        };
        let gpus = [
            gpu(
                0,
                vec![p(201, Some(10), Some("ddp")), p(300, Some(99), None)],
            ),
            gpu(
                1,
                vec![p(202, Some(5), Some("ddp")), p(100, None, Some("solo"))],
            ),
        ];
        let use_ = by_run(&gpus);
        assert_eq!(use_.len(), 2);
        assert_eq!(
            use_["ddp"],
            RunGpuUse {
                gpus: vec![0, 1],
                memory_bytes: Some(15)
            }
        );
        assert_eq!(use_["solo"].memory_bytes, None);
    }

    #[test]
    fn running_trainings_are_found_by_their_status() {
        use crate::runs::run_dir::{RunState, RunStatus};
        let dir = tempfile::tempdir().unwrap();
        let status = |state, pid| RunStatus {
            state,
            pid,
            step: 1,
            total_steps: 2,
            message: String::new(),
            updated_at: String::new(),
            start_time: None,
            device: None,
            world_size: None,
        };
        let me = std::process::id();
        for (name, st) in [
            ("live", status(RunState::Running, me)),
            ("dead", status(RunState::Running, u32::MAX - 1)),
            ("done", status(RunState::Done, me)),
        ] {
            let run = RunDir::new(dir.path().join(name));
            std::fs::create_dir_all(&run.path).unwrap();
            run.write_status(&st).unwrap();
        }
        std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
        assert_eq!(trainings(dir.path()), vec![t("live", me)]);
    }

    #[test]
    fn the_largest_newest_checkpoint_of_any_run_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (run, step, bytes) in [("a", 1, 10_000usize), ("a", 2, 300_000), ("b", 5, 50_000)] {
            let ck = root.join(run).join(format!("step_{step:06}"));
            std::fs::create_dir_all(&ck).unwrap();
            std::fs::write(ck.join("meta.toml"), "step = 1\n").unwrap();
            std::fs::write(ck.join("model.safetensors"), vec![1u8; bytes]).unwrap();
        }
        let largest = largest_checkpoint(root).unwrap();
        assert!((300_000..400_000).contains(&largest), "{largest}");
        assert_eq!(largest_checkpoint(&root.join("none")), None);
        let mut probe = crate::system::host::HostProbe::new(Folders {
            largest_checkpoint,
            ..Folders::new(root.to_path_buf(), root.join("data"))
        });
        assert_eq!(
            probe.sample().disks[0].largest_checkpoint_bytes,
            Some(largest)
        );
    }
}
