//! The machine the lab runs on, in figures: every GPU (name, utilisation, memory,
//! temperature, power, the processes on it and the runs they train) and the host (CPU load,
//! memory, free disk of the checkpoint and data folders).
//!
//! GPU figures come from a [`GpuSource`]: NVML through the `nvml-wrapper` crate, which loads
//! `libnvidia-ml.so.1` at run time (a CPU machine runs the same binary and gets a reason
//! instead of figures), or a fake source of N GPUs with deterministic figures
//! (`STACKLAB_FAKE_GPUS=N`), for tests and demonstrations. The lab samples on its own thread
//! ([`sampler::Monitor`]); `doctor` and `runs --json` take one sample
//! (`runs::gpu_use::sample_once`).

pub mod fake;
pub mod host;
pub mod labels;
pub mod nvml;
pub mod sampler;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use host::{DiskFigures, HostFigures};

/// `STACKLAB_FAKE_GPUS=N`: N fake GPUs instead of NVML's (0 to 64; `0` is a machine
/// without GPUs).
pub const FAKE_GPUS_ENV: &str = "STACKLAB_FAKE_GPUS";
/// `STACKLAB_FAKE_GPU_PIDS=PID[:GPU],...`: processes the fake GPUs report (on GPU
/// `i mod N` for the i-th pid without one), so the pid -> run mapping can be tried.
pub const FAKE_GPU_PIDS_ENV: &str = "STACKLAB_FAKE_GPU_PIDS";

/// One GPU's figures at one moment; a figure the GPU or driver does not report is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuFigures {
    /// NVML's index: nvidia-smi's numbering (every GPU of the machine, in PCI order),
    /// which differs from CUDA's under `CUDA_VISIBLE_DEVICES`.
    pub index: u32,
    pub name: String,
    /// The PCI bus id (`00000000:3B:00.0`).
    pub bus_id: Option<String>,
    /// Percent of the last sample period a kernel ran.
    pub utilization_percent: Option<u32>,
    /// The whole device's memory in use (every process, the driver's reserve).
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_c: Option<u32>,
    pub power_w: Option<f64>,
    /// The enforced power limit.
    pub power_limit_w: Option<f64>,
    pub processes: Vec<GpuProcess>,
}

/// A process with a context on a GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuProcess {
    pub pid: u32,
    /// Device memory the process uses (not reported in some containers).
    pub memory_bytes: Option<u64>,
    /// The stacklab run whose training this process is (or a process of, for a run in
    /// several processes); `None` for any other process.
    pub run: Option<String>,
}

/// Why there are no GPU figures: said in one line where the figures would be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum NoGpus {
    /// NVML's library could not be loaded: no NVIDIA driver is installed.
    LibraryNotFound(String),
    /// The library loaded but the driver does not answer (not loaded, no permission,
    /// a driver/library version mismatch).
    NoDriver(String),
    /// NVML works and counts no GPU.
    NoGpu,
    /// Any other NVML failure.
    Failed(String),
    /// `STACKLAB_FAKE_GPUS` holds something else than a number of GPUs.
    BadFake(String),
}

impl std::fmt::Display for NoGpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoGpus::LibraryNotFound(d) => {
                write!(f, "no NVIDIA driver: the NVML library was not found ({d})")
            }
            NoGpus::NoDriver(d) => write!(f, "the NVIDIA driver does not answer: {d}"),
            NoGpus::NoGpu => write!(f, "no GPU: the NVIDIA driver reports none"),
            NoGpus::Failed(d) => write!(f, "NVML failed: {d}"),
            NoGpus::BadFake(v) => write!(
                f,
                "{FAKE_GPUS_ENV}={v:?} is not a number of GPUs (0 to {})",
                fake::MAX_GPUS
            ),
        }
    }
}

/// Where GPU figures come from.
pub trait GpuSource: Send {
    /// What the figures come from, e.g. `NVML 12.550.54, driver 550.54.15`.
    fn describe(&self) -> String;
    /// Every GPU's figures now (processes not yet mapped to runs), or why there are none.
    fn sample(&mut self) -> Result<Vec<GpuFigures>, NoGpus>;
}

/// The source the environment asks for: fake GPUs under `STACKLAB_FAKE_GPUS`, else NVML.
pub fn source_from_env() -> Box<dyn GpuSource> {
    match std::env::var(FAKE_GPUS_ENV) {
        Ok(v) => {
            let pids = std::env::var(FAKE_GPU_PIDS_ENV).unwrap_or_default();
            Box::new(fake::FakeSource::from_env_values(&v, &pids))
        }
        Err(_) => Box::new(nvml::NvmlSource::new()),
    }
}

/// What the host figures and the process names need from the lab: the checkpoint and data
/// folders (their free space), and how to read the runs (given by the layer that knows
/// them, `runs::gpu_use::lab_folders`; [`Folders::new`] reads none).
#[derive(Debug, Clone)]
pub struct Folders {
    pub checkpoints: PathBuf,
    pub data: PathBuf,
    /// The size of the largest newest checkpoint of the runs under the checkpoint folder.
    pub largest_checkpoint: fn(&Path) -> Option<u64>,
    /// Names the run of each GPU process, from the runs under the checkpoint folder.
    pub name_processes: fn(&mut [GpuFigures], &Path),
}

impl Folders {
    /// The folders alone: no checkpoint size, no process named.
    pub fn new(checkpoints: PathBuf, data: PathBuf) -> Folders {
        Folders {
            checkpoints,
            data,
            largest_checkpoint: |_| None,
            name_processes: |_, _| {},
        }
    }
}

/// One moment's figures of the whole machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub gpus: Result<Vec<GpuFigures>, NoGpus>,
    pub host: HostFigures,
}

impl Sample {
    /// The GPUs' figures; none when there are no figures.
    pub fn gpu_list(&self) -> &[GpuFigures] {
        self.gpus.as_deref().unwrap_or(&[])
    }
}
