//! The lab's sampler: a thread that takes a sample on a timer (never more often than once a
//! second), maps GPU processes to runs and keeps a short history per GPU for sparklines.
//! Drawing only reads the latest snapshot under a mutex the thread holds for the time of
//! an update (never during NVML calls or file reads).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::host::HostProbe;
use super::{Folders, GpuFigures, GpuSource, Sample};

/// The shortest interval between samples.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per GPU for its sparklines.
pub const HISTORY: usize = 60;

/// One GPU's recent figures, oldest first, in percent (of the GPU's time, of its memory).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuHistory {
    pub utilization: VecDeque<u64>,
    pub memory: VecDeque<u64>,
}

/// What the sampler has seen: the latest sample and the history before it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Bumped by every sample, so a pane knows when to redraw.
    pub version: u64,
    pub latest: Option<Sample>,
    /// By GPU position in the latest sample.
    pub gpu_history: Vec<GpuHistory>,
    /// The CPUs' busy percent.
    pub cpu_history: VecDeque<u64>,
    /// What the GPU figures come from (`NVML 12.550.54, driver 550.54.15`).
    pub source: String,
    pub interval: Duration,
}

fn push_capped(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

impl Snapshot {
    /// Takes in a new sample: it becomes the latest, and its figures join the history.
    pub fn push(&mut self, sample: Sample) {
        let gpus = sample.gpu_list();
        self.gpu_history
            .resize_with(gpus.len(), GpuHistory::default);
        for (h, g) in self.gpu_history.iter_mut().zip(gpus) {
            push_capped(
                &mut h.utilization,
                g.utilization_percent.unwrap_or(0) as u64,
            );
            let mem = match (g.memory_used_bytes, g.memory_total_bytes) {
                (Some(u), Some(t)) if t > 0 => u.saturating_mul(100) / t,
                _ => 0,
            };
            push_capped(&mut h.memory, mem);
        }
        if let Some(b) = sample.host.cpu_busy_percent {
            push_capped(&mut self.cpu_history, b.round() as u64);
        }
        self.latest = Some(sample);
        self.version += 1;
    }
}

struct Shared {
    snapshot: Mutex<Snapshot>,
    stop: Mutex<bool>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the sampling thread when the last [`Monitor`] handle is dropped.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        *lock(&self.0.stop) = true;
        self.0.wake.notify_all();
    }
}

/// A handle on the sampler's snapshot; clones share it. The thread ends with the last one.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
    _stop: Option<Arc<StopOnDrop>>,
}

impl Monitor {
    /// Starts sampling `source` and the host every `interval` (at least [`MIN_INTERVAL`]).
    pub fn start(source: Box<dyn GpuSource>, folders: Folders, interval: Duration) -> Monitor {
        let interval = interval.max(MIN_INTERVAL);
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(Snapshot {
                interval,
                ..Snapshot::default()
            }),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lab-system".into())
            .spawn(move || run(thread_shared, source, folders, interval));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the system sampler: {e}");
        }
        Monitor {
            _stop: Some(Arc::new(StopOnDrop(shared.clone()))),
            shared,
        }
    }

    /// A monitor that never samples: it shows `snapshot` (tests, fixed screens).
    pub fn fixed(snapshot: Snapshot) -> Monitor {
        Monitor {
            shared: Arc::new(Shared {
                snapshot: Mutex::new(snapshot),
                stop: Mutex::new(true),
                wake: Condvar::new(),
            }),
            _stop: None,
        }
    }

    /// Reads the snapshot (briefly: the sampler waits meanwhile).
    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&lock(&self.shared.snapshot))
    }

    /// Adds a sample by hand (what the thread does; for fixed monitors in tests).
    pub fn push(&self, sample: Sample) {
        lock(&self.shared.snapshot).push(sample);
    }

    pub fn version(&self) -> u64 {
        self.read(|s| s.version)
    }
}

/// How long the runs of an unchanged set of GPU processes stand before they are looked up
/// again (a process may become a run's after it took the GPU: a rank records itself then).
const RENAME_EVERY: Duration = Duration::from_secs(10);

/// The runs of the GPU processes: looked up (the runs' files read) when the set of
/// processes changes and at least every [`RENAME_EVERY`], not at every sample.
#[derive(Default)]
struct Names {
    pids: Vec<u32>,
    runs: Vec<Option<String>>,
    at: Option<std::time::Instant>,
}

impl Names {
    fn apply(&mut self, gpus: &mut [GpuFigures], folders: &Folders) {
        let pids: Vec<u32> = gpus
            .iter()
            .flat_map(|g| g.processes.iter().map(|p| p.pid))
            .collect();
        let fresh = self.at.is_some_and(|t| t.elapsed() < RENAME_EVERY);
        let procs = gpus.iter_mut().flat_map(|g| g.processes.iter_mut());
        if fresh && pids == self.pids {
            for (p, run) in procs.zip(&self.runs) {
                p.run = run.clone();
            }
            return;
        }
        (folders.name_processes)(gpus, &folders.checkpoints);
        self.runs = gpus
            .iter()
            .flat_map(|g| g.processes.iter().map(|p| p.run.clone()))
            .collect();
        self.pids = pids;
        self.at = Some(std::time::Instant::now());
    }
}

fn run(shared: Arc<Shared>, mut source: Box<dyn GpuSource>, folders: Folders, every: Duration) {
    let mut probe = HostProbe::new(folders.clone());
    let mut names = Names::default();
    // Whether the last description was of working figures: a source that starts working
    // later (a driver loaded) is described again.
    let mut described: Option<bool> = None;
    loop {
        let mut gpus = source.sample();
        if let Ok(g) = &mut gpus {
            names.apply(g, &folders);
        }
        let host = probe.sample();
        let what = (described != Some(gpus.is_ok())).then(|| source.describe());
        {
            let mut snap = lock(&shared.snapshot);
            if let Some(w) = what {
                snap.source = w;
                described = Some(gpus.is_ok());
            }
            snap.push(Sample { gpus, host });
        }
        let stop = lock(&shared.stop);
        let (stop, _) = shared
            .wake
            .wait_timeout_while(stop, every, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        if *stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::fake::FakeSource;
    use std::time::Instant;

    fn folders() -> (tempfile::TempDir, Folders) {
        let dir = tempfile::tempdir().unwrap();
        let f = Folders::new(dir.path().join("checkpoints"), dir.path().join("data"));
        (dir, f)
    }

    #[test]
    fn the_sampler_samples_at_most_once_a_second_and_stops_with_its_last_handle() {
        let (_dir, f) = folders();
        let m = Monitor::start(Box::new(FakeSource::new(8)), f, Duration::from_millis(10));
        let t0 = Instant::now();
        while m.version() < 2 {
            assert!(t0.elapsed() < Duration::from_secs(20), "no second sample");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Asked for 10 ms, it waited its one second between the two samples.
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{:?}",
            t0.elapsed()
        );
        m.read(|s| {
            assert_eq!(s.interval, MIN_INTERVAL);
            assert_eq!(s.latest.as_ref().unwrap().gpu_list().len(), 8);
            assert_eq!(s.gpu_history[0].utilization.len() as u64, s.version);
            assert!(s.source.starts_with("fake: 8 GPUs"), "{}", s.source);
        });
        let shared = m.shared.clone();
        let copy = m.clone();
        drop(m);
        assert!(!*lock(&shared.stop), "a clone still holds it");
        drop(copy);
        assert!(*lock(&shared.stop));
    }

    #[test]
    fn history_keeps_the_last_sixty_samples_per_gpu() {
        let mut snap = Snapshot::default();
        let mut src = FakeSource::new(2);
        for _ in 0..(HISTORY + 5) {
            snap.push(Sample {
                gpus: src.sample(),
                host: Default::default(),
            });
        }
        assert_eq!(snap.version, HISTORY as u64 + 5);
        assert_eq!(snap.gpu_history.len(), 2);
        assert_eq!(snap.gpu_history[1].utilization.len(), HISTORY);
        let last = snap.latest.as_ref().unwrap().gpu_list()[1].utilization_percent;
        assert_eq!(
            snap.gpu_history[1].utilization.back().copied(),
            last.map(u64::from)
        );
        // The GPUs go away: so does their history.
        snap.push(Sample {
            gpus: Err(crate::system::NoGpus::NoGpu),
            host: Default::default(),
        });
        assert!(snap.gpu_history.is_empty());
    }

    static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn count_lookups(gpus: &mut [GpuFigures], _: &std::path::Path) {
        LOOKUPS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for p in gpus.iter_mut().flat_map(|g| g.processes.iter_mut()) {
            p.run = Some(format!("run-of-{}", p.pid));
        }
    }

    /// The runs' files are read when the processes change, not at every sample; the names
    /// found stay on the processes in between.
    #[test]
    fn runs_are_looked_up_again_only_when_the_processes_change() {
        use crate::system::GpuProcess;
        let (_dir, f) = folders();
        let f = Folders {
            name_processes: count_lookups,
            ..f
        };
        let gpu = |pids: &[u32]| {
            let mut g = crate::system::nvml::unavailable(0, "test");
            g.processes = pids
                .iter()
                .map(|&pid| GpuProcess {
                    pid,
                    memory_bytes: None,
                    run: None,
                })
                .collect();
            vec![g]
        };
        let mut names = Names::default();
        let before = LOOKUPS.load(std::sync::atomic::Ordering::SeqCst);
        let mut a = gpu(&[5, 7]);
        names.apply(&mut a, &f);
        let mut b = gpu(&[5, 7]);
        names.apply(&mut b, &f);
        assert_eq!(b[0].processes[1].run.as_deref(), Some("run-of-7"));
        assert_eq!(
            LOOKUPS.load(std::sync::atomic::Ordering::SeqCst) - before,
            1
        );
        let mut c = gpu(&[5, 9]);
        names.apply(&mut c, &f);
        assert_eq!(c[0].processes[1].run.as_deref(), Some("run-of-9"));
        assert_eq!(
            LOOKUPS.load(std::sync::atomic::Ordering::SeqCst) - before,
            2
        );
    }
}
