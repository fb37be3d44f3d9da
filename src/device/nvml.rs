//! The NVML device of a CUDA device, for its name and memory (NVML itself through
//! `nvml-wrapper`, shared with the lab's System pane: [`crate::system::nvml`]).
//!
//! NVML numbers every GPU of the machine in PCI order; CUDA numbers only the visible ones
//! (`CUDA_VISIBLE_DEVICES`), fastest first unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`. The two
//! indices differ as soon as a GPU is hidden or the GPUs differ, so a CUDA ordinal is
//! mapped to its NVML device by PCI address, which both report; where the CUDA runtime
//! cannot say the address, nothing is reported rather than another GPU's figures.

use std::ffi::c_int;
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

/// `cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device)`.
type CudaAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;

/// `cudaDevAttrPciBusId`, `cudaDevAttrPciDeviceId`, `cudaDevAttrPciDomainId`.
const CUDA_ATTR_PCI_BUS: c_int = 33;
const CUDA_ATTR_PCI_DEVICE: c_int = 34;
const CUDA_ATTR_PCI_DOMAIN: c_int = 50;

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

/// Name and memory of CUDA device `cuda_ordinal` (CUDA's numbering, under
/// `CUDA_VISIBLE_DEVICES` too), found in NVML by its PCI address.
pub fn gpu(cuda_ordinal: usize) -> Option<GpuInfo> {
    let devices = crate::system::nvml::devices().ok()?;
    let address = cuda_pci_address(cuda_ordinal)?;
    // A device NVML cannot give (another GPU lost, hidden) has no address, matching none.
    let none = PciAddress {
        domain: u32::MAX,
        bus: u32::MAX,
        device: u32::MAX,
    };
    let addresses: Vec<PciAddress> = devices
        .iter()
        .map(|d| {
            let p = d.as_ref().ok()?.pci_info().ok()?;
            Some(PciAddress {
                domain: p.domain,
                bus: p.bus,
                device: p.device,
            })
        })
        .map(|a| a.unwrap_or(none))
        .collect();
    let d = devices[nvml_index_of(address, &addresses)?].as_ref().ok()?;
    let (used, total) = crate::system::nvml::memory_used_total(d)?;
    Some(GpuInfo {
        name: d.name().ok()?,
        memory_total: total,
        memory_used: used,
    })
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
