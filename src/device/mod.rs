//! Finding libtorch's CUDA, choosing the device, and saying which one is used.
//!
//! rustc links with `--as-needed`, so `libtorch_cuda.so` is dropped from the binary and
//! libtorch would report no CUDA even on a GPU machine. [`init`] loads it with `dlopen`
//! before the first tch call; where it is absent (a CPU-only libtorch) that simply fails and
//! the program runs on the CPU.
//!
//! [`cpu`] sets up the CPU runtime under libtorch (how its OpenMP threads wait, how freed
//! memory is kept); [`memory`] and [`nvml`] measure what a device uses.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use tch::Device;

pub mod cpu;
pub mod memory;
pub mod nvml;
pub mod slots;

/// What [`init`] found, kept for `doctor` and the logs.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub torch_lib_dir: Option<PathBuf>,
    pub cuda_library: CudaLibrary,
}

#[derive(Debug, Clone)]
pub enum CudaLibrary {
    Loaded(PathBuf),
    Missing(String),
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The variable libtorch reads (once, at its first cuBLAS fp32 matmul) to allow TF32.
pub const TF32_VARIABLE: &str = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE";

/// Turns on TF32 for fp32 matmuls on CUDA, as the seed's validation had it
/// (`torch.set_float32_matmul_precision('high')`), unless the environment already says.
/// tch 0.24 binds none of libtorch's precision setters (`at::globalContext()
/// .setFloat32MatmulPrecision`), so this sets the variable libtorch reads instead.
///
/// Call it first thing in `main`, while no other thread exists (setting the environment
/// races with any thread reading it); never from a library or a test.
pub fn set_tf32_variable() {
    if std::env::var_os(TF32_VARIABLE).is_none() {
        std::env::set_var(TF32_VARIABLE, "1");
    }
}

/// What fp32 matmuls (validation, `precision = "fp32"`) use on CUDA in this process.
pub fn cuda_fp32_matmul() -> String {
    match std::env::var(TF32_VARIABLE).as_deref() {
        Ok("1") => {
            format!("TF32 ({TF32_VARIABLE}=1), as the seed's set_float32_matmul_precision('high')")
        }
        Ok(v) => format!("full fp32 ({TF32_VARIABLE}={v}); the seed validated with TF32"),
        Err(_) => format!("full fp32 ({TF32_VARIABLE} unset); the seed validated with TF32"),
    }
}

/// Loads libtorch's CUDA library (once). Must run before any tch call.
pub fn init() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let torch_lib_dir = loaded_torch_lib_dir();
        let cuda_library = load_cuda_library(torch_lib_dir.as_deref());
        Runtime {
            torch_lib_dir,
            cuda_library,
        }
    })
}

/// The directory of the `libtorch_cpu.so` this process actually loaded.
fn loaded_torch_lib_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(|d| d.to_path_buf()))
        .or_else(|| {
            let baked = env!("STACKLAB_TORCH_LIB");
            (!baked.is_empty()).then(|| PathBuf::from(baked))
        })
}

fn load_cuda_library(lib_dir: Option<&std::path::Path>) -> CudaLibrary {
    let mut candidates = Vec::new();
    if let Some(dir) = lib_dir {
        candidates.push(dir.join("libtorch_cuda.so"));
    }
    candidates.push(PathBuf::from("libtorch_cuda.so"));
    let mut last_error = String::from("libtorch_cuda.so not found");
    for path in candidates {
        if path.is_absolute() && !path.exists() {
            last_error = format!("{} does not exist (a CPU-only libtorch)", path.display());
            continue;
        }
        let c_path = match std::ffi::CString::new(path.to_string_lossy().as_bytes()) {
            Ok(c) => c,
            Err(_) => continue,
        };
        // SAFETY: dlopen with a valid C string; the handle is deliberately never closed.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return CudaLibrary::Loaded(path);
        }
        // SAFETY: dlerror returns a thread-local C string or null.
        let err = unsafe { libc::dlerror() };
        if !err.is_null() {
            last_error = unsafe { std::ffi::CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned();
        }
    }
    CudaLibrary::Missing(last_error)
}

/// The libtorch version, read from the torch package or libtorch folder that was loaded.
pub fn libtorch_version() -> Option<String> {
    let dir = init().torch_lib_dir.as_ref()?;
    let root = dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("__version__") {
                let v = rest.trim_start_matches([' ', '=']).trim();
                return Some(v.trim_matches(['\'', '"']).to_string());
            }
        }
    }
    std::fs::read_to_string(root.join("build-version"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A device request from the command line or a config: `auto`, `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    init();
    let spec = spec.trim();
    let count = cuda_device_count();
    let need_cuda = |index: usize| -> Result<Device> {
        if count == 0 {
            let why = match &init().cuda_library {
                CudaLibrary::Loaded(_) => "libtorch has CUDA but sees no GPU".to_string(),
                CudaLibrary::Missing(e) => e.clone(),
            };
            bail!("device `{spec}` requested, but CUDA is not available here ({why}); use --device cpu");
        }
        if index >= count {
            bail!(
                "device `{spec}` does not exist: this machine has {count} CUDA device(s), cuda:0..cuda:{}",
                count - 1
            );
        }
        Ok(Device::Cuda(index))
    };
    match spec {
        "" | "auto" => Ok(if count > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => need_cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => need_cuda(i),
            _ => bail!("unknown device `{spec}`: expected auto, cpu, cuda or cuda:N"),
        },
    }
}

pub fn cuda_device_count() -> usize {
    init();
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

/// A short human name: `cpu (2 threads)` or `cuda:0 (NVIDIA H200, 139.8 GiB)`.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => match nvml::gpu(i) {
            Some(g) => format!(
                "cuda:{i} ({}, {:.1} GiB)",
                g.name,
                g.memory_total as f64 / GIB
            ),
            None => format!("cuda:{i}"),
        },
        other => format!("{other:?}"),
    }
}

pub fn name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub const GIB: f64 = (1u64 << 30) as f64;

/// Waits for queued device work, so timings measure the work and not its launch.
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The dense bf16 peak of a known GPU in TFLOP/s (vendor figures, without sparsity).
pub fn bf16_peak_tflops(gpu_name: &str) -> Option<(f64, &'static str)> {
    let n = gpu_name.to_lowercase();
    let table: [(&str, f64, &str); 6] = [
        ("h200", 989.0, "H200 SXM dense bf16"),
        ("h100 pcie", 756.0, "H100 PCIe dense bf16"),
        ("h100", 989.0, "H100 SXM dense bf16"),
        ("a100", 312.0, "A100 dense bf16"),
        ("l40s", 362.0, "L40S dense bf16"),
        ("4090", 165.0, "RTX 4090 dense bf16"),
    ];
    table
        .iter()
        .find(|(k, _, _)| n.contains(k))
        .map(|(_, v, what)| (*v, *what))
}

/// What libraries say when device memory ran out: the caching allocator's "CUDA out of
/// memory", and the CUDA libraries that allocate their own workspaces (a cuBLAS handle on
/// the first matmul of a full card fails with `CUBLAS_STATUS_ALLOC_FAILED`).
const OUT_OF_MEMORY_MARKERS: [&str; 7] = [
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUSOLVER_STATUS_ALLOC_FAILED",
    "cudaErrorMemoryAllocation",
    "CUDA_ERROR_OUT_OF_MEMORY",
    "OutOfMemoryError",
];

/// Whether an error message (a libtorch error, a panic's payload) says that the device ran
/// out of memory.
pub fn is_out_of_memory(message: &str) -> bool {
    let lower = message.to_lowercase();
    OUT_OF_MEMORY_MARKERS
        .iter()
        .any(|m| lower.contains(&m.to_lowercase()))
}

/// Peak resident memory of this process in bytes (Linux `getrusage`).
pub fn peak_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage fills a plain struct.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then(|| usage.ru_maxrss as u64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs_and_refuses_unknown_ones() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        let err = parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device `tpu`"), "{err}");
        if cuda_device_count() == 0 {
            let err = parse_device("cuda:1").unwrap_err().to_string();
            assert!(err.contains("CUDA is not available"), "{err}");
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        } else {
            let n = cuda_device_count();
            let err = parse_device(&format!("cuda:{n}")).unwrap_err().to_string();
            assert!(err.contains("does not exist"), "{err}");
        }
    }

    #[test]
    fn allocation_failures_of_cuda_libraries_are_out_of_memory() {
        for msg in [
            "CUDA out of memory. Tried to allocate 12.28 GiB. GPU 0 has a total capacity of 79.19 GiB",
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
            "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        ] {
            assert!(is_out_of_memory(msg), "{msg}");
        }
        for msg in [
            "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx`",
            "shape '[2, 32]' is invalid for input of size 4096",
        ] {
            assert!(!is_out_of_memory(msg), "{msg}");
        }
    }

    #[test]
    fn knows_the_bf16_peak_of_the_lent_gpus() {
        assert_eq!(bf16_peak_tflops("NVIDIA H200").unwrap().0, 989.0);
        assert_eq!(bf16_peak_tflops("NVIDIA H100 80GB HBM3").unwrap().0, 989.0);
        assert!(bf16_peak_tflops("Some CPU").is_none());
    }
}
