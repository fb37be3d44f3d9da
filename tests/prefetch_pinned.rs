//! Batches read ahead for a CUDA device are put in pinned memory without a word on stderr:
//! libtorch's `pin_memory(device)` printed two deprecation warnings per tensor, four lines
//! per micro-batch. (On a machine without a GPU the pinning itself fails and the batch
//! stays in pageable memory; the call is the same.)

use std::io::{Read, Seek};
use std::os::fd::AsRawFd;

use stacklab::data::loader::Batch;
use stacklab::data::prefetch::{HostBatch, Prefetcher};
use tch::Device;

/// What `f` writes to the process's stderr (file descriptor 2, where libtorch's C++
/// warnings go). This file holds one test, so nothing else writes meanwhile.
fn stderr_of(f: impl FnOnce()) -> String {
    let mut file = tempfile::tempfile().unwrap();
    // SAFETY: plain descriptor juggling; fd 2 is restored before returning.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    unsafe { libc::dup2(file.as_raw_fd(), 2) };
    f();
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    let mut text = String::new();
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_cuda_bound_prefetch_prints_nothing_and_keeps_the_tokens() {
    stacklab::device::init();
    let batch = Batch {
        b: 2,
        t: 3,
        inputs: vec![1, 2, 3, 4, 5, 6],
        targets: vec![2, 3, 4, 5, 6, 7],
    };
    let (want_x, want_y) = batch.tensors(Device::Cpu);
    let mut got = Vec::new();
    let printed = stderr_of(|| {
        let b = batch.clone();
        let mut p = Prefetcher::spawn(2, move || Ok(HostBatch::new(&b, Device::Cuda(0))));
        for _ in 0..3 {
            got.push(p.recv().unwrap());
        }
        got.push(HostBatch::from_batches(
            &[batch.rows(0, 1), batch.rows(1, 1)],
            Device::Cuda(0),
        ));
    });
    assert_eq!(printed, "", "stderr while pinning batches");
    for h in &got {
        assert_eq!(h.x.device(), Device::Cpu);
        assert!(h.x.equal(&want_x) && h.y.equal(&want_y));
    }
}
