//! The NCCL backend: a shared object built from `csrc/dist_nccl.cpp` when the build found
//! NCCL's and CUDA's headers, embedded in the binary and loaded on first use (after
//! libtorch_cuda, which `device::init` loads), so a binary carried to a GPU machine needs no
//! file beside it.

use std::ffi::c_void;
use std::sync::OnceLock;

use super::env::Launch;
use super::ffi::{self, Err, NcclBackend};

#[cfg(stacklab_nccl)]
static OBJECT: &[u8] = include_bytes!(env!("STACKLAB_NCCL_SO"));
#[cfg(not(stacklab_nccl))]
static OBJECT: &[u8] = &[];

/// Whether this build has the NCCL backend.
pub fn compiled() -> bool {
    !OBJECT.is_empty()
}

/// The object written out (once, under a name of its content's hash) and loaded.
fn load() -> Result<NcclBackend, String> {
    static LOADED: OnceLock<Result<NcclBackend, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if !compiled() {
                return Err(format!(
                    "this build has no NCCL backend ({})",
                    env!("STACKLAB_DIST_NCCL_BUILD")
                ));
            }
            let hash = crate::hash::sha256_hex(OBJECT);
            let path = std::env::temp_dir().join(format!("stacklab-nccl-{}.so", &hash[..16]));
            if !path.is_file() {
                crate::paths::write_atomic(&path, OBJECT)
                    .map_err(|e| format!("cannot write {}: {e:#}", path.display()))?;
            }
            let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
            // SAFETY: the object is ours; its initialisers only register c10d's types.
            let lib = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }
                .map_err(|e| format!("cannot load the NCCL backend {}: {e}", path.display()))?;
            // SAFETY: the symbol has the signature `NcclBackend` declares.
            let f = unsafe { lib.get::<NcclBackend>(b"stacklab_nccl_backend\0") }
                .map(|s| *s)
                .map_err(|e| format!("the NCCL backend has no entry point: {e}"))?;
            // Loaded for the rest of the process: `f` points into it.
            std::mem::forget(lib);
            Ok(f)
        })
        .clone()
}

/// An NCCL group of `l` on CUDA device `gpu` (`cuda:LOCAL_RANK`, or the process's GPU of a
/// `--device` list), over `store`; null with `err` set on failure.
pub(super) fn group(
    store: *mut c_void,
    l: &Launch,
    gpu: usize,
    timeout_ms: i64,
    err: &mut Err,
) -> *mut c_void {
    let f = match load() {
        Ok(f) => f,
        Err(e) => {
            err.set(&e);
            return std::ptr::null_mut();
        }
    };
    // SAFETY: a live store handle and an error buffer of the length given.
    let backend = unsafe {
        f(
            store,
            l.rank as i32,
            l.world as i32,
            gpu as i32,
            timeout_ms,
            err.ptr(),
            err.len(),
        )
    };
    if backend.is_null() {
        return backend;
    }
    // SAFETY: `backend` is the heap backend pointer the object returned; taken over here.
    unsafe { ffi::stacklab_dist_group_from_backend(store, backend, timeout_ms) }
}
