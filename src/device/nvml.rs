//! GPU names and memory through NVML (the driver's management library), loaded at run time.
//!
//! NVML numbers every GPU of the machine in PCI order; CUDA numbers only the visible ones
//! (`CUDA_VISIBLE_DEVICES`), fastest first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`. The two
//! indices differ as soon as a GPU is hidden or the GPUs differ, so a CUDA ordinal is
//! mapped to its NVML device by PCI address, which both report; where the CUDA runtime
//! cannot say the address, nothing is reported rather than another GPU's figures.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

#[derive(Debug, Clone)]
pub struct GpuInfo {
    pub name: String,
    pub memory_total: u64,
    pub memory_used: u64,
}

/// A PCI address: domain, bus, device (the function is 0 for every GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
}

#[repr(C)]
struct MemoryInfo {
    total: u64,
    free: u64,
    used: u64,
}

/// `nvmlPciInfo_t` (the layout of `nvmlDeviceGetPciInfo_v3`).
#[repr(C)]
struct PciInfo {
    bus_id_legacy: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_sub_system_id: c_uint,
    bus_id: [c_char; 32],
}

type Init = unsafe extern "C" fn() -> c_int;
type Count = unsafe extern "C" fn(*mut c_uint) -> c_int;
type HandleByIndex = unsafe extern "C" fn(c_uint, *mut *mut c_void) -> c_int;
type Pci = unsafe extern "C" fn(*mut c_void, *mut PciInfo) -> c_int;
type Name = unsafe extern "C" fn(*mut c_void, *mut c_char, c_uint) -> c_int;
type Memory = unsafe extern "C" fn(*mut c_void, *mut MemoryInfo) -> c_int;
/// `cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device)`.
type CudaAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;

/// `cudaDevAttrPciBusId`, `cudaDevAttrPciDeviceId`, `cudaDevAttrPciDomainId`.
const CUDA_ATTR_PCI_BUS: c_int = 33;
const CUDA_ATTR_PCI_DEVICE: c_int = 34;
const CUDA_ATTR_PCI_DOMAIN: c_int = 50;

fn library() -> Option<&'static libloading::Library> {
    static LIB: OnceLock<Option<libloading::Library>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: loading the NVIDIA management library runs no user-visible initialisers.
        let lib = unsafe { libloading::Library::new("libnvidia-ml.so.1") }.ok()?;
        let ok = {
            let init: libloading::Symbol<Init> = unsafe { lib.get(b"nvmlInit_v2") }.ok()?;
            unsafe { init() == 0 }
        };
        ok.then_some(lib)
    })
    .as_ref()
}

/// `cudaDeviceGetAttribute` of the CUDA runtime libtorch loaded (`super::init` loads
/// libtorch_cuda globally, and the runtime with it), or of a runtime mapped in the process.
fn cuda_attribute_fn() -> Option<CudaAttribute> {
    static FN: OnceLock<Option<usize>> = OnceLock::new();
    let addr = *FN.get_or_init(|| {
        super::init();
        let name = c"cudaDeviceGetAttribute";
        // SAFETY: dlsym with a valid C string; the address is only called with the
        // documented signature.
        let global = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        if !global.is_null() {
            return Some(global as usize);
        }
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let path = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libcudart.so"))?;
        let c_path = std::ffi::CString::new(path).ok()?;
        // SAFETY: the library is already mapped; RTLD_NOLOAD only returns its handle.
        unsafe {
            let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if handle.is_null() {
                return None;
            }
            let f = libc::dlsym(handle, name.as_ptr());
            (!f.is_null()).then_some(f as usize)
        }
    });
    // SAFETY: the address is `cudaDeviceGetAttribute`'s, found above.
    addr.map(|a| unsafe { std::mem::transmute::<usize, CudaAttribute>(a) })
}

/// The PCI address of CUDA device `ordinal`, as the CUDA runtime reports it.
pub fn cuda_pci_address(ordinal: usize) -> Option<PciAddress> {
    let get = cuda_attribute_fn()?;
    let attr = |a: c_int| {
        let mut v: c_int = 0;
        // SAFETY: the runtime writes one int; an error (no driver, no such device) is
        // returned, not raised.
        (unsafe { get(&mut v, a, ordinal as c_int) } == 0 && v >= 0).then_some(v as u32)
    };
    Some(PciAddress {
        domain: attr(CUDA_ATTR_PCI_DOMAIN)?,
        bus: attr(CUDA_ATTR_PCI_BUS)?,
        device: attr(CUDA_ATTR_PCI_DEVICE)?,
    })
}

/// The NVML index of the device at `address`, from NVML's devices' addresses in index order.
pub fn nvml_index_of(address: PciAddress, nvml_devices: &[PciAddress]) -> Option<usize> {
    nvml_devices.iter().position(|d| *d == address)
}

/// Every NVML device's handle and PCI address, in NVML's order.
fn nvml_devices(lib: &libloading::Library) -> Option<Vec<(*mut c_void, PciAddress)>> {
    // SAFETY: the symbols have the NVML signatures declared above.
    unsafe {
        let count: libloading::Symbol<Count> = lib.get(b"nvmlDeviceGetCount_v2").ok()?;
        let by_index: libloading::Symbol<HandleByIndex> =
            lib.get(b"nvmlDeviceGetHandleByIndex_v2").ok()?;
        let pci: libloading::Symbol<Pci> = lib.get(b"nvmlDeviceGetPciInfo_v3").ok()?;
        let mut n: c_uint = 0;
        if count(&mut n) != 0 {
            return None;
        }
        let mut out = Vec::new();
        for i in 0..n {
            let mut handle = std::ptr::null_mut();
            if by_index(i, &mut handle) != 0 {
                return None;
            }
            let mut info: PciInfo = std::mem::zeroed();
            if pci(handle, &mut info) != 0 {
                return None;
            }
            out.push((
                handle,
                PciAddress {
                    domain: info.domain,
                    bus: info.bus,
                    device: info.device,
                },
            ));
        }
        Some(out)
    }
}

/// Name and memory of CUDA device `cuda_ordinal` (CUDA's numbering, under
/// `CUDA_VISIBLE_DEVICES` too), found in NVML by its PCI address.
pub fn gpu(cuda_ordinal: usize) -> Option<GpuInfo> {
    let lib = library()?;
    let address = cuda_pci_address(cuda_ordinal)?;
    let devices = nvml_devices(lib)?;
    let addresses: Vec<PciAddress> = devices.iter().map(|(_, a)| *a).collect();
    let handle = devices[nvml_index_of(address, &addresses)?].0;
    // SAFETY: the symbols have the NVML signatures declared above; `handle` is NVML's.
    unsafe {
        let get_name: libloading::Symbol<Name> = lib.get(b"nvmlDeviceGetName").ok()?;
        let get_memory: libloading::Symbol<Memory> = lib.get(b"nvmlDeviceGetMemoryInfo").ok()?;
        let mut buf = [0 as c_char; 128];
        if get_name(handle, buf.as_mut_ptr(), buf.len() as c_uint) != 0 {
            return None;
        }
        let name = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
        let mut mem = MemoryInfo {
            total: 0,
            free: 0,
            used: 0,
        };
        if get_memory(handle, &mut mem) != 0 {
            return None;
        }
        Some(GpuInfo {
            name,
            memory_total: mem.total,
            memory_used: mem.used,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bus: u32) -> PciAddress {
        PciAddress {
            domain: 0,
            bus,
            device: 0,
        }
    }

    /// `CUDA_VISIBLE_DEVICES=2` on a machine of three GPUs: CUDA's device 0 is NVML's 2.
    #[test]
    fn a_cuda_ordinal_maps_to_the_nvml_device_at_its_pci_address() {
        let nvml = [at(0x3b), at(0x5e), at(0x86)];
        assert_eq!(nvml_index_of(at(0x86), &nvml), Some(2));
        assert_eq!(nvml_index_of(at(0x5e), &nvml), Some(1));
        // Another domain with the same bus is another GPU.
        let other = PciAddress {
            domain: 1,
            ..at(0x3b)
        };
        assert_eq!(nvml_index_of(other, &nvml), None);
    }

    #[test]
    fn without_a_cuda_device_nothing_is_reported() {
        if crate::device::cuda_device_count() == 0 {
            assert!(cuda_pci_address(0).is_none());
            assert!(gpu(0).is_none());
        } else {
            let a = cuda_pci_address(0).expect("a CUDA device has a PCI address");
            assert!(a.bus > 0 || a.device > 0 || a.domain > 0, "{a:?}");
        }
    }
}
