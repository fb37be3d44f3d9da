//! What a CUDA device's memory holds, in the two quantities that are compared across
//! implementations: the whole device's use (NVML: the CUDA context, the caching allocator's
//! reserve, other processes) and the caching allocator's own count of bytes handed to
//! tensors (what `torch.cuda.max_memory_allocated` reports). tch binds neither statistic
//! of the allocator, so `csrc/cuda_memory.cpp` reads them through c10's allocator interface.

use tch::Device;

extern "C" {
    fn stacklab_cuda_allocator_stats(device: libc::c_int, out: *mut i64) -> libc::c_int;
    fn stacklab_cuda_memory_info(device: libc::c_int, out: *mut i64) -> libc::c_int;
}

/// Free and total bytes of CUDA device `ordinal` as the CUDA runtime sees it
/// (`cudaMemGetInfo`: a MIG slice's own memory, where NVML sees its parent GPU); `None`
/// without a CUDA allocator in use.
pub fn cuda_memory_info(ordinal: usize) -> Option<(u64, u64)> {
    let mut out = [0i64; 2];
    // SAFETY: the shim writes two int64s into `out` and catches every C++ exception.
    let rc = unsafe { stacklab_cuda_memory_info(ordinal as libc::c_int, out.as_mut_ptr()) };
    (rc == 0).then(|| (out[0].max(0) as u64, out[1].max(0) as u64))
}

/// The CUDA caching allocator's byte counts for one device, since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorStats {
    pub allocated: u64,
    /// `torch.cuda.max_memory_allocated`.
    pub peak_allocated: u64,
    pub reserved: u64,
    /// `torch.cuda.max_memory_reserved`.
    pub peak_reserved: u64,
}

/// The allocator's statistics for CUDA device `ordinal`; `None` where libtorch has no CUDA
/// allocator, or it has not been initialised (no CUDA tensor yet), or no such device.
pub fn cuda_allocator_stats(ordinal: usize) -> Option<AllocatorStats> {
    let mut out = [0i64; 4];
    // SAFETY: the shim writes four int64s into `out` and catches every C++ exception.
    let rc = unsafe { stacklab_cuda_allocator_stats(ordinal as libc::c_int, out.as_mut_ptr()) };
    (rc == 0).then(|| AllocatorStats {
        allocated: out[0].max(0) as u64,
        peak_allocated: out[1].max(0) as u64,
        reserved: out[2].max(0) as u64,
        peak_reserved: out[3].max(0) as u64,
    })
}

/// Peaks of a device's memory over a run, sampled where the caller chooses.
#[derive(Debug, Clone)]
pub struct PeakMemory {
    device: Device,
    nvml_used: u64,
    allocator: Option<AllocatorStats>,
}

/// [`PeakMemory`]'s figures in GiB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeakMemoryReport {
    /// The whole device's memory in use (NVML), the largest sample; CUDA only.
    pub nvml_used_gib: Option<f64>,
    /// The caching allocator's peak of bytes allocated to tensors; CUDA only.
    pub max_allocated_gib: Option<f64>,
    /// The caching allocator's peak reserve (allocated plus cached); CUDA only.
    pub max_reserved_gib: Option<f64>,
    /// Peak resident memory of the process; the CPU's figure.
    pub process_rss_gib: Option<f64>,
}

impl PeakMemory {
    pub fn new(device: Device) -> PeakMemory {
        PeakMemory {
            device,
            nvml_used: 0,
            allocator: None,
        }
    }

    /// Reads the device's use now (the allocator keeps its own peaks).
    pub fn sample(&mut self) {
        if let Device::Cuda(i) = self.device {
            if let Some(g) = super::nvml::gpu(i) {
                self.nvml_used = self.nvml_used.max(g.memory_used);
            }
            if let Some(s) = cuda_allocator_stats(i) {
                self.allocator = Some(s);
            }
        }
    }

    pub fn report(&self) -> PeakMemoryReport {
        let gib = |b: u64| b as f64 / super::GIB;
        match self.device {
            Device::Cuda(_) => PeakMemoryReport {
                nvml_used_gib: (self.nvml_used > 0).then(|| gib(self.nvml_used)),
                max_allocated_gib: self.allocator.map(|s| gib(s.peak_allocated)),
                max_reserved_gib: self.allocator.map(|s| gib(s.peak_reserved)),
                process_rss_gib: super::peak_rss_bytes().map(gib),
            },
            _ => PeakMemoryReport {
                process_rss_gib: super::peak_rss_bytes().map(gib),
                ..PeakMemoryReport::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shim links and answers on a machine without a GPU (libtorch's CUDA library may
    /// be loaded, its allocator registered, and still no device): no figures, no crash.
    #[test]
    fn allocator_stats_are_absent_without_a_cuda_tensor_or_device() {
        if crate::device::cuda_device_count() == 0 {
            assert_eq!(cuda_memory_info(0), None);
        }
        crate::device::init();
        if crate::device::cuda_device_count() == 0 {
            assert_eq!(cuda_allocator_stats(0), None);
            let mut m = PeakMemory::new(Device::Cpu);
            m.sample();
            let r = m.report();
            assert!(r.nvml_used_gib.is_none() && r.max_allocated_gib.is_none());
            assert!(r.process_rss_gib.unwrap() > 0.0);
        } else {
            let t = tch::Tensor::zeros([1 << 20], (tch::Kind::Float, Device::Cuda(0)));
            let s = cuda_allocator_stats(0).expect("the allocator answers after a CUDA tensor");
            assert!(
                s.allocated >= 4 << 20 && s.peak_allocated >= s.allocated,
                "{s:?}"
            );
            assert!(s.peak_reserved >= s.peak_allocated, "{s:?}");
            drop(t);
        }
    }
}
