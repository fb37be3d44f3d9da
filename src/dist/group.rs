//! A c10d process group (Gloo or NCCL) and its rendezvous store, safely: every collective
//! waits at most the group's timeout and fails with a message naming what went wrong,
//! never a hang and never a panic.

use std::ffi::{c_void, CString};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

use super::env::{is_loopback, Launch, StoreHost};
use super::ffi::{self, Err};

/// c10d's backend: Gloo on the CPU, NCCL on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    pub fn for_device(device: Device) -> Backend {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
}

/// The processes of one launch, connected.
pub struct ProcessGroup {
    store: *mut c_void,
    pub(super) group: *mut c_void,
    pub rank: usize,
    pub world: usize,
    pub backend: Backend,
    pub device: Device,
    pub timeout: Duration,
}

// SAFETY: the handles are owned C++ objects; c10d's stores and backends may be used from
// any thread, and the group is used by one thread at a time (`&self` calls are serialised by
// the training loop, and `Sync` is not claimed).
unsafe impl Send for ProcessGroup {}

fn cstring(what: &str, s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{what} `{s}` holds a NUL byte"))
}

/// The rendezvous store of `l`, hosted by rank 0 (`RankZero`) or torchrun's agent.
fn connect_store(l: &Launch, timeout: Duration) -> Result<*mut c_void> {
    let host = cstring("MASTER_ADDR", &l.master_addr)?;
    let (server, prefix) = match &l.store {
        StoreHost::RankZero => (l.rank == 0, String::new()),
        StoreHost::Agent { prefix } => (false, prefix.clone()),
    };
    let prefix = cstring("the store prefix", &prefix)?;
    let mut err = Err::new();
    // SAFETY: valid NUL-terminated strings and an error buffer of the length given.
    let store = unsafe {
        ffi::stacklab_dist_store(
            host.as_ptr(),
            l.master_port as i32,
            server as i32,
            l.world as i32,
            timeout.as_millis() as i64,
            prefix.as_ptr(),
            err.ptr(),
            err.len(),
        )
    };
    if store.is_null() {
        let msg = err.message();
        let at = format!(
            "MASTER_ADDR:MASTER_PORT = {}:{}",
            l.master_addr, l.master_port
        );
        if server && (msg.contains("EADDRINUSE") || msg.contains("address already in use")) {
            bail!("MASTER_PORT = {}: the port is in use on this host, so rank 0 cannot host the rendezvous there (choose another MASTER_PORT): {msg}", l.master_port);
        }
        if server {
            bail!("rank 0 cannot host the rendezvous at {at}: {msg}");
        }
        bail!(
            "rank {} of {} could not join the rendezvous at {at} within {}s: {msg}",
            l.rank,
            l.world,
            timeout.as_secs()
        );
    }
    Ok(store)
}

impl ProcessGroup {
    /// Connects this process to the others of `l`: the store, then the backend for
    /// `device` (NCCL on CUDA, Gloo on the CPU).
    pub fn connect(l: &Launch, device: Device, timeout: Duration) -> Result<ProcessGroup> {
        let backend = Backend::for_device(device);
        if backend == Backend::Gloo && !super::has_gloo() {
            bail!(
                "{} processes on the CPU need Gloo, which this build does not have ({}); see `stacklab doctor`",
                l.world,
                super::gloo_build()
            );
        }
        let store = connect_store(l, timeout)?;
        let mut err = Err::new();
        let ms = timeout.as_millis() as i64;
        let group = match backend {
            Backend::Gloo => {
                let iface = std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default();
                let host = if is_loopback(&l.master_addr) {
                    "127.0.0.1"
                } else {
                    ""
                };
                let (iface, host) = (cstring("GLOO_SOCKET_IFNAME", &iface)?, cstring("", host)?);
                // SAFETY: `store` is a live store handle; strings and buffer are valid.
                unsafe {
                    ffi::stacklab_dist_gloo(
                        store,
                        l.rank as i32,
                        l.world as i32,
                        ms,
                        iface.as_ptr(),
                        host.as_ptr(),
                        err.ptr(),
                        err.len(),
                    )
                }
            }
            Backend::Nccl => {
                let gpu = match device {
                    Device::Cuda(i) => i,
                    _ => l.local_rank,
                };
                super::nccl::group(store, l, gpu, ms, &mut err)
            }
        };
        if group.is_null() {
            // SAFETY: the store handle was made above and is not used after this.
            unsafe { ffi::stacklab_dist_store_free(store) };
            bail!(
                "rank {} of {}: the {} process group did not form: {}",
                l.rank,
                l.world,
                backend.name(),
                err.message()
            );
        }
        Ok(ProcessGroup {
            store,
            group,
            rank: l.rank,
            world: l.world,
            backend,
            device,
            timeout,
        })
    }

    pub(super) fn failed(&self, what: &str, msg: String) -> anyhow::Error {
        anyhow::anyhow!(
            "{what} across the {} processes failed on rank {} (another process died, stopped answering within the {}s collective timeout, or failed): {msg}",
            self.world,
            self.rank,
            self.timeout.as_secs()
        )
    }

    /// Starts an in-place all-reduce of each tensor (contiguous, on the group's device), one
    /// collective each, in order; [`Pending::wait`] finishes them.
    pub fn start_all_reduce(&self, ts: &[&Tensor], op: ReduceOp) -> Result<Pending<'_>> {
        let ptrs: Vec<*mut C_tensor> = ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
        let mut err = Err::new();
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
        };
        // SAFETY: the tensors outlive the call (c10d keeps its own references to them).
        let p = unsafe {
            ffi::stacklab_dist_allreduce_start(
                self.group,
                ptrs.as_ptr(),
                ptrs.len() as i32,
                op,
                err.ptr(),
                err.len(),
            )
        };
        if p.is_null() {
            return Err(self.failed("an all-reduce", err.message()));
        }
        Ok(Pending {
            group: self,
            handle: p,
        })
    }

    /// An in-place all-reduce of each tensor, waited for.
    pub fn all_reduce(&self, ts: &[&Tensor], op: ReduceOp) -> Result<()> {
        self.start_all_reduce(ts, op)?.wait()
    }

    /// `root`'s values of the tensors, in place on every process.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        let ptrs: Vec<*mut C_tensor> = ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
        let mut err = Err::new();
        // SAFETY: as in `start_all_reduce`.
        let rc = unsafe {
            ffi::stacklab_dist_broadcast(
                self.group,
                ptrs.as_ptr(),
                ptrs.len() as i32,
                root as i32,
                err.ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(self.failed("a broadcast", err.message()));
        }
        Ok(())
    }

    /// Returns once every process has reached it.
    pub fn barrier(&self) -> Result<()> {
        let index = match self.device {
            Device::Cuda(i) => i as i32,
            _ => -1,
        };
        let mut err = Err::new();
        // SAFETY: a live group and an error buffer of the length given.
        let rc = unsafe { ffi::stacklab_dist_barrier(self.group, index, err.ptr(), err.len()) };
        if rc != 0 {
            return Err(self.failed("a barrier", err.message()));
        }
        Ok(())
    }

    /// Sets `key` in the rendezvous store.
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = cstring("a store key", key)?;
        let mut err = Err::new();
        // SAFETY: a live store; `value` is valid for its length.
        let rc = unsafe {
            ffi::stacklab_dist_store_set(
                self.store,
                k.as_ptr(),
                value.as_ptr(),
                value.len(),
                err.ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(self.failed("writing the rendezvous store", err.message()));
        }
        Ok(())
    }

    /// `key`'s value in the store, waiting for it at most the group's timeout.
    pub fn store_get(&self, key: &str) -> Result<Vec<u8>> {
        let k = cstring("a store key", key)?;
        let mut err = Err::new();
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut n = 0usize;
        // SAFETY: a live store; `data` receives a malloc'ed buffer of `n` bytes, freed below.
        let rc = unsafe {
            ffi::stacklab_dist_store_get(
                self.store,
                k.as_ptr(),
                self.timeout.as_millis() as i64,
                &mut data,
                &mut n,
                err.ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(self.failed("reading the rendezvous store", err.message()));
        }
        // SAFETY: `data` holds `n` bytes from malloc.
        let out = unsafe { std::slice::from_raw_parts(data, n).to_vec() };
        // SAFETY: allocated by malloc in the shim, freed once.
        unsafe { libc::free(data as *mut libc::c_void) };
        Ok(out)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: both handles were made by the shim and are freed once, group first.
        unsafe {
            ffi::stacklab_dist_free(self.group);
            ffi::stacklab_dist_store_free(self.store);
        }
    }
}

/// Collectives started and not yet waited for.
pub struct Pending<'a> {
    group: &'a ProcessGroup,
    handle: *mut c_void,
}

impl Pending<'_> {
    /// Waits for every collective (each within the group's timeout).
    pub fn wait(self) -> Result<()> {
        let mut err = Err::new();
        let handle = self.handle;
        let group = self.group;
        std::mem::forget(self);
        // SAFETY: `handle` came from `stacklab_dist_allreduce_start` and is freed by this call.
        let rc = unsafe { ffi::stacklab_dist_wait(handle, err.ptr(), err.len()) };
        if rc != 0 {
            return Err(group.failed("an all-reduce", err.message()));
        }
        Ok(())
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut err = Err::new();
        // SAFETY: not yet waited for (`wait` forgets `self`); waiting frees the handle.
        unsafe { ffi::stacklab_dist_wait(self.handle, err.ptr(), err.len()) };
    }
}
