//! GPU figures from NVML, through `nvml-wrapper` (it loads `libnvidia-ml.so.1` at run time:
//! without the NVIDIA driver the binary runs the same and says why there are no figures).
//! NVML is initialised once per process and shared by the lab's sampler, `doctor`, `bench`
//! and `eval`.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::{GpuFigures, GpuProcess, GpuSource, NoGpus};

/// How long a failed start of NVML stands before it is tried again (a driver loaded after
/// the lab started, a permission fixed).
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// NVML, initialised on first use and kept; the reason it is unavailable otherwise, tried
/// again at most every [`RETRY_AFTER`].
pub fn handle() -> Result<&'static Nvml, NoGpus> {
    static NVML: OnceLock<Nvml> = OnceLock::new();
    static FAILED: Mutex<Option<(Instant, NoGpus)>> = Mutex::new(None);
    if let Some(n) = NVML.get() {
        return Ok(n);
    }
    let mut failed = FAILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = NVML.get() {
        return Ok(n);
    }
    if let Some((at, why)) = &*failed {
        if at.elapsed() < RETRY_AFTER {
            return Err(why.clone());
        }
    }
    match Nvml::init() {
        Ok(n) => {
            *failed = None;
            Ok(NVML.get_or_init(|| n))
        }
        Err(e) => {
            let why = reason(&e);
            *failed = Some((Instant::now(), why.clone()));
            Err(why)
        }
    }
}

/// Why NVML could not start, in the words the System pane shows.
pub fn reason(e: &NvmlError) -> NoGpus {
    match e {
        NvmlError::LibloadingError(le) => NoGpus::LibraryNotFound(first_clause(&le.to_string())),
        NvmlError::LibraryNotFound => NoGpus::LibraryNotFound("libnvidia-ml.so.1".into()),
        NvmlError::FailedToLoadSymbol(s) => {
            NoGpus::Failed(format!("the NVML library is too old ({s})"))
        }
        NvmlError::FunctionNotFound => NoGpus::Failed("the NVML library is too old".into()),
        NvmlError::DriverNotLoaded => NoGpus::NoDriver("the kernel driver is not loaded".into()),
        NvmlError::NoPermission => {
            NoGpus::NoDriver("no permission to talk to it (/dev/nvidia*)".into())
        }
        NvmlError::LibRmVersionMismatch => NoGpus::NoDriver(
            "its library and kernel module differ in version (reboot after a driver update)".into(),
        ),
        NvmlError::NotFound => NoGpus::NoGpu,
        other => NoGpus::Failed(other.to_string()),
    }
}

/// A loader's message up to its first line (dlopen's are long).
fn first_clause(s: &str) -> String {
    let s = s.lines().next().unwrap_or(s).trim();
    s.strip_prefix("a libloading error occurred: ")
        .unwrap_or(s)
        .to_string()
}

/// The NVML devices of this machine, in NVML's order: each a handle, or why it cannot be
/// had (a GPU fallen off the bus, one a container may not see) without hiding the others.
pub fn devices() -> Result<Vec<Result<Device<'static>, String>>, NoGpus> {
    let nvml = handle()?;
    let n = nvml.device_count().map_err(|e| reason(&e))?;
    if n == 0 {
        return Err(NoGpus::NoGpu);
    }
    Ok((0..n)
        .map(|i| nvml.device_by_index(i).map_err(|e| e.to_string()))
        .collect())
}

/// Bytes of device memory in use: total less free, what `nvmlDeviceGetMemoryInfo` (v1) and
/// nvidia-smi call used (v2's `used` leaves out the driver's reserve). Drivers before R510
/// have only v1, which is asked when v2 is missing.
pub fn memory_used_total(d: &Device) -> Option<(u64, u64)> {
    if let Ok(m) = d.memory_info() {
        return Some((m.total.saturating_sub(m.free), m.total));
    }
    let lib = handle().ok()?.lib();
    lib.nvmlDeviceGetMemoryInfo.as_ref().ok()?;
    // SAFETY: a live device handle of this NVML and a plain struct v1 fills.
    let (rc, m) = unsafe {
        let mut m: nvml_wrapper_sys::bindings::nvmlMemory_t = std::mem::zeroed();
        (lib.nvmlDeviceGetMemoryInfo(d.handle(), &mut m), m)
    };
    (rc == nvml_wrapper_sys::bindings::nvmlReturn_enum_NVML_SUCCESS)
        .then(|| (m.total.saturating_sub(m.free), m.total))
}

/// Every process with a compute or graphics context on `d`, each pid once.
fn processes(d: &Device) -> Vec<GpuProcess> {
    let mut out: Vec<GpuProcess> = Vec::new();
    let lists = [
        d.running_compute_processes(),
        d.running_graphics_processes(),
    ];
    for p in lists.into_iter().flatten().flatten() {
        let memory_bytes = match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => Some(b),
            UsedGpuMemory::Unavailable => None,
        };
        if let Some(seen) = out.iter_mut().find(|q| q.pid == p.pid) {
            // A process in both lists is one process: NVML gives its memory on the device
            // in each, so the larger is taken, not the sum.
            seen.memory_bytes = match (seen.memory_bytes, memory_bytes) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            continue;
        }
        out.push(GpuProcess {
            pid: p.pid,
            memory_bytes,
            run: None,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// One device's figures; what it does not report is `None`.
pub fn figures(index: u32, d: &Device) -> GpuFigures {
    let memory = memory_used_total(d);
    GpuFigures {
        index,
        name: d.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
        bus_id: d.pci_info().ok().map(|p| p.bus_id),
        utilization_percent: d.utilization_rates().ok().map(|u| u.gpu),
        memory_used_bytes: memory.map(|m| m.0),
        memory_total_bytes: memory.map(|m| m.1),
        temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
        power_w: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
        power_limit_w: d.enforced_power_limit().ok().map(|mw| mw as f64 / 1000.0),
        processes: processes(d),
    }
}

/// A GPU NVML lists but cannot give a handle for: its index and why, no figures.
pub fn unavailable(index: u32, why: &str) -> GpuFigures {
    GpuFigures {
        index,
        name: format!("unavailable ({why})"),
        bus_id: None,
        utilization_percent: None,
        memory_used_bytes: None,
        memory_total_bytes: None,
        temperature_c: None,
        power_w: None,
        power_limit_w: None,
        processes: Vec::new(),
    }
}

/// The NVML source: every GPU of the machine.
#[derive(Default)]
pub struct NvmlSource;

impl NvmlSource {
    pub fn new() -> NvmlSource {
        NvmlSource
    }
}

impl GpuSource for NvmlSource {
    fn describe(&self) -> String {
        match handle() {
            Ok(n) => format!(
                "NVML {}, driver {}",
                n.sys_nvml_version().unwrap_or_else(|_| "?".into()),
                n.sys_driver_version().unwrap_or_else(|_| "?".into())
            ),
            Err(_) => "NVML".into(),
        }
    }

    fn sample(&mut self) -> Result<Vec<GpuFigures>, NoGpus> {
        Ok(devices()?
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Ok(d) => figures(i as u32, d),
                Err(why) => unavailable(i as u32, why),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_nvml_failure_becomes_a_reason_in_words() {
        let missing = NvmlError::LibraryNotFound;
        assert!(matches!(reason(&missing), NoGpus::LibraryNotFound(_)));
        assert!(reason(&missing).to_string().starts_with("no NVIDIA driver"));
        let r = reason(&NvmlError::DriverNotLoaded);
        assert_eq!(
            r,
            NoGpus::NoDriver("the kernel driver is not loaded".into())
        );
        assert!(r.to_string().contains("does not answer"), "{r}");
        assert!(matches!(
            reason(&NvmlError::NoPermission),
            NoGpus::NoDriver(_)
        ));
        assert!(reason(&NvmlError::LibRmVersionMismatch)
            .to_string()
            .contains("reboot"));
        assert_eq!(reason(&NvmlError::NotFound), NoGpus::NoGpu);
        assert!(matches!(reason(&NvmlError::Unknown), NoGpus::Failed(_)));
        assert_eq!(
            first_clause("a libloading error occurred: libnvidia-ml.so.1: cannot open\nmore"),
            "libnvidia-ml.so.1: cannot open"
        );
    }

    /// On this machine: figures for every GPU, or a reason; never a panic. Without the
    /// driver the reason is the missing library or driver.
    #[test]
    fn the_nvml_source_answers_with_figures_or_a_reason() {
        let mut s = NvmlSource::new();
        match s.sample() {
            Ok(gpus) => {
                assert!(!gpus.is_empty());
                for g in &gpus {
                    let (used, total) =
                        (g.memory_used_bytes.unwrap(), g.memory_total_bytes.unwrap());
                    assert!(used <= total && total > 0, "{g:?}");
                }
            }
            Err(why) => {
                if !std::path::Path::new("/dev/nvidiactl").exists() {
                    assert!(
                        matches!(why, NoGpus::LibraryNotFound(_) | NoGpus::NoDriver(_)),
                        "{why:?}"
                    );
                }
                assert!(!why.to_string().is_empty());
            }
        }
        assert!(s.describe().starts_with("NVML"));
    }
}
