//! The C ABI of `csrc/dist.cpp` and `csrc/dist_nccl.cpp`. Every call that can fail returns
//! null or -1 and writes libtorch's message into the caller's buffer; [`Err`] turns that
//! into an error.

use std::ffi::{c_char, c_int, c_void, CStr};

use torch_sys::C_tensor;

extern "C" {
    pub fn stacklab_dist_has_gloo() -> c_int;
    pub fn stacklab_dist_store(
        host: *const c_char,
        port: c_int,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    pub fn stacklab_dist_store_free(store: *mut c_void);
    pub fn stacklab_dist_store_set(
        store: *mut c_void,
        key: *const c_char,
        data: *const u8,
        n: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn stacklab_dist_store_get(
        store: *mut c_void,
        key: *const c_char,
        timeout_ms: i64,
        data: *mut *mut u8,
        n: *mut usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn stacklab_dist_gloo(
        store: *mut c_void,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        iface: *const c_char,
        host: *const c_char,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    pub fn stacklab_dist_group_from_backend(
        store: *mut c_void,
        backend: *mut c_void,
        timeout_ms: i64,
    ) -> *mut c_void;
    pub fn stacklab_dist_free(group: *mut c_void);
    pub fn stacklab_dist_allreduce_start(
        group: *mut c_void,
        ts: *const *mut C_tensor,
        n: c_int,
        op: c_int,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    pub fn stacklab_dist_wait(pending: *mut c_void, err: *mut c_char, len: usize) -> c_int;
    pub fn stacklab_dist_broadcast(
        group: *mut c_void,
        ts: *const *mut C_tensor,
        n: c_int,
        root: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn stacklab_dist_buckets_new(
        group: *mut c_void,
        ps: *const *mut C_tensor,
        ids: *const i64,
        n: c_int,
        sizes: *const i64,
        nb: c_int,
        hooks: c_int,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    pub fn stacklab_dist_buckets_arm(buckets: *mut c_void);
    pub fn stacklab_dist_buckets_launch(
        buckets: *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn stacklab_dist_buckets_wait(
        buckets: *mut c_void,
        from_hooks: *mut c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn stacklab_dist_buckets_free(buckets: *mut c_void);
    pub fn stacklab_dist_barrier(
        group: *mut c_void,
        device_index: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// `stacklab_nccl_backend` in the NCCL shared object (looked up at run time).
pub type NcclBackend = unsafe extern "C" fn(
    store: *mut c_void,
    rank: c_int,
    world: c_int,
    device: c_int,
    timeout_ms: i64,
    err: *mut c_char,
    len: usize,
) -> *mut c_void;

/// A buffer for a C++ error message.
pub struct Err {
    buf: Vec<c_char>,
}

impl Err {
    pub fn new() -> Err {
        Err { buf: vec![0; 2048] }
    }

    pub fn ptr(&mut self) -> *mut c_char {
        self.buf.as_mut_ptr()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The message written into the buffer.
    pub fn message(&self) -> String {
        // SAFETY: the buffer is NUL-terminated: zeroed, and the C++ side writes at most
        // len - 1 bytes and a NUL.
        let s = unsafe { CStr::from_ptr(self.buf.as_ptr()) };
        let text = s.to_string_lossy();
        // libtorch's messages can carry a C++ frame list after the first line.
        text.lines().next().unwrap_or("").trim().to_string()
    }
}

impl Err {
    /// Writes a message of this side into the buffer.
    pub fn set(&mut self, msg: &str) {
        let n = msg.len().min(self.buf.len() - 1);
        for (d, s) in self.buf.iter_mut().zip(msg.as_bytes()[..n].iter()) {
            *d = *s as c_char;
        }
        self.buf[n] = 0;
    }
}
