//! Data loading overlapped with compute: a thread reads the next batches (and turns them
//! into host tensors, pinned on CUDA so their copy to the device does not block the host)
//! while the device works on the current one.
//!
//! [`Prefetcher`] owns what it reads from (training: its own copy of the train stream, whose
//! position after each step travels with the step, so the run's stream can be moved to it
//! and checkpoints stay exact); [`scoped`] borrows it for the length of a call (evaluation's
//! loader). Items arrive in the order they were produced; an error is delivered in its place
//! and ends the production.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

use super::loader::Batch;
use super::train_stream::{TrainStream, TrainStreamState};

/// A batch's inputs and targets as (B, T) int64 host tensors, in pinned memory when they are
/// bound for a CUDA device.
pub struct HostBatch {
    pub x: Tensor,
    pub y: Tensor,
}

/// Whether pinning host memory failed once in this process (no driver, no device): then
/// batches stay in pageable memory, whose copy to the device works but waits.
static PINNING_FAILED: AtomicBool = AtomicBool::new(false);

/// `t` in pinned (page-locked) memory for copies to `device`, or `t` itself where pinning
/// is impossible. `_pin_memory` rather than `pin_memory(device)`: the latter first asks the
/// driver whether `t` is pinned already (it never is here) and prints two deprecation
/// warnings for its `device` argument, on every call.
fn pinned(t: Tensor, device: Device) -> Tensor {
    if PINNING_FAILED.load(Ordering::Relaxed) {
        return t;
    }
    match t.f_internal_pin_memory(device) {
        Ok(p) => p,
        Err(e) => {
            PINNING_FAILED.store(true, Ordering::Relaxed);
            let why = e.to_string();
            let why = why.lines().next().unwrap_or_default();
            tracing::warn!(
                "no pinned host memory ({why}): batches are copied from pageable memory"
            );
            t
        }
    }
}

impl HostBatch {
    pub fn new(batch: &Batch, device: Device) -> HostBatch {
        let shape = [batch.b as i64, batch.t as i64];
        let host = |v: &[i64]| {
            let t = Tensor::from_slice(v).view(shape);
            if device.is_cuda() {
                pinned(t, device)
            } else {
                t
            }
        };
        HostBatch {
            x: host(&batch.inputs),
            y: host(&batch.targets),
        }
    }

    /// Batches of one sequence length as one batch, in order.
    pub fn from_batches(batches: &[Batch], device: Device) -> HostBatch {
        match batches {
            [one] => HostBatch::new(one, device),
            _ => {
                let t = batches.first().map_or(0, |b| b.t);
                let batch = Batch {
                    b: batches.iter().map(|b| b.b).sum(),
                    t,
                    inputs: batches
                        .iter()
                        .flat_map(|b| b.inputs.iter().copied())
                        .collect(),
                    targets: batches
                        .iter()
                        .flat_map(|b| b.targets.iter().copied())
                        .collect(),
                };
                HostBatch::new(&batch, device)
            }
        }
    }

    /// Inputs and targets on `device`: a copy queued without waiting from pinned memory on
    /// CUDA, the same tensors on the CPU.
    pub fn to_device(&self, device: Device) -> (Tensor, Tensor) {
        let mv = |t: &Tensor| {
            if device.is_cuda() {
                t.to_device_(device, Kind::Int64, true, false)
            } else {
                t.shallow_clone()
            }
        };
        (mv(&self.x), mv(&self.y))
    }
}

/// A thread producing items ahead of their use, at most `depth` ahead.
pub struct Prefetcher<T: Send + 'static> {
    rx: Option<Receiver<Result<T>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetcher<T> {
    /// Starts producing: `produce` is called on the thread until it fails, until the
    /// prefetcher is dropped, or forever.
    pub fn spawn(depth: usize, mut produce: impl FnMut() -> Result<T> + Send + 'static) -> Self {
        let (tx, rx) = sync_channel(depth.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("stacklab-prefetch".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    let item = produce();
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("the prefetch thread starts");
        Prefetcher {
            rx: Some(rx),
            stop,
            handle: Some(handle),
        }
    }

    /// The next item, waiting for it if the thread has not produced it yet.
    pub fn recv(&mut self) -> Result<T> {
        let rx = self.rx.as_ref().expect("the receiver lives until drop");
        rx.recv()
            .map_err(|_| anyhow!("the data prefetch thread stopped"))?
    }
}

impl<T: Send + 'static> Drop for Prefetcher<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver fails the thread's pending send, so it ends.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One training step's data, read ahead: the micro-batches this process runs.
pub struct StepData {
    /// This process's micro-batches of the step, in the step's (rank-major) order
    /// ([`TrainStream::next_step`]); all of them in a single process.
    pub batches: Vec<Batch>,
    /// Each of `batches`' place among the step's micro-batches.
    pub index: Vec<usize>,
    /// The step's micro-batches, over all processes.
    pub total: usize,
    pub host: Vec<HostBatch>,
    /// On COCONUT steps in the seed's mode, each micro-batch's next batch
    /// ([`TrainStream::seed_next_batches`]).
    pub next_batches: Option<Vec<Batch>>,
    pub next: Option<Vec<HostBatch>>,
    /// Where the stream stands after the step: what a checkpoint after it saves.
    pub state_after: TrainStreamState,
}

/// Reads the steps after `done_steps` from `stream` ahead of the training loop (two steps
/// at most); `wants_next(step)` says whether step `step` (1-based) needs its micro-batches'
/// next batches, `mine(k)` whether this process runs micro-batch `k` of a step (every
/// process reads the whole step, so every process's stream stands where rank 0's does).
pub fn train_steps(
    mut stream: TrainStream,
    done_steps: i64,
    device: Device,
    wants_next: impl Fn(i64) -> bool + Send + 'static,
    mine: impl Fn(usize) -> bool + Send + 'static,
) -> Prefetcher<StepData> {
    let mut step = done_steps;
    Prefetcher::spawn(2, move || {
        step += 1;
        let all = stream.next_step()?;
        let next = if wants_next(step) {
            Some(stream.seed_next_batches(&all)?)
        } else {
            None
        };
        let total = all.len();
        let index: Vec<usize> = (0..total).filter(|k| mine(*k)).collect();
        let pick = |v: Vec<Batch>| -> Vec<Batch> {
            v.into_iter()
                .enumerate()
                .filter(|(k, _)| mine(*k))
                .map(|(_, b)| b)
                .collect()
        };
        let (batches, next) = (pick(all), next.map(pick));
        let host_of = |v: &[Batch]| v.iter().map(|b| HostBatch::new(b, device)).collect();
        Ok(StepData {
            host: host_of(&batches),
            next: next.as_deref().map(host_of),
            next_batches: next,
            batches,
            index,
            total,
            state_after: stream.state(),
        })
    })
}

/// Runs `consume` over the items `produce` makes on another thread (at most `depth` ahead),
/// until `produce` returns `None` or an error (which `consume` receives in its place). The
/// producer may borrow from the caller: the thread ends before this returns, also when
/// `consume` stops early.
pub fn scoped<T: Send, R>(
    depth: usize,
    mut produce: impl FnMut() -> Option<Result<T>> + Send,
    consume: impl FnOnce(&mut dyn Iterator<Item = Result<T>>) -> R,
) -> R {
    std::thread::scope(|s| {
        let (tx, rx) = sync_channel(depth.max(1));
        s.spawn(move || {
            while let Some(item) = produce() {
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        let mut items = rx.iter();
        let out = consume(&mut items);
        // Dropping the receiver ends a producer still sending.
        drop(rx);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_arrive_in_order_and_an_error_ends_the_stream() {
        let mut n = 0;
        let mut p = Prefetcher::spawn(2, move || {
            n += 1;
            if n <= 3 {
                Ok(n)
            } else {
                Err(anyhow!("out of data after {}", n - 1))
            }
        });
        assert_eq!(
            [p.recv().unwrap(), p.recv().unwrap(), p.recv().unwrap()],
            [1, 2, 3]
        );
        assert_eq!(p.recv().unwrap_err().to_string(), "out of data after 3");
        assert!(p.recv().unwrap_err().to_string().contains("stopped"));
    }

    #[test]
    fn an_endless_producer_stops_when_dropped() {
        let mut p = Prefetcher::spawn(1, || Ok(0u8));
        assert_eq!(p.recv().unwrap(), 0);
        drop(p); // joins the thread: the test would hang if it did not end
    }

    #[test]
    fn scoped_borrows_and_stops_with_its_consumer() {
        let source: Vec<i64> = (0..100).collect();
        let mut pos = 0;
        let taken: Vec<i64> = scoped(
            3,
            || {
                let v = source.get(pos).copied().map(Ok);
                pos += 1;
                v
            },
            |items| items.take(5).map(|r| r.unwrap()).collect(),
        );
        assert_eq!(taken, vec![0, 1, 2, 3, 4]);
        let all: Vec<i64> = {
            let mut pos = 0;
            scoped(
                1,
                || {
                    let v = source.get(pos).copied().map(Ok);
                    pos += 1;
                    v
                },
                |items| items.map(|r| r.unwrap()).collect(),
            )
        };
        assert_eq!(all, source);
    }

    #[test]
    fn host_batches_are_the_batch_on_the_cpu() {
        let b = Batch {
            b: 2,
            t: 3,
            inputs: vec![1, 2, 3, 4, 5, 6],
            targets: vec![2, 3, 4, 5, 6, 7],
        };
        let (x, y) = HostBatch::new(&b, Device::Cpu).to_device(Device::Cpu);
        let (wx, wy) = b.tensors(Device::Cpu);
        assert!(x.equal(&wx) && y.equal(&wy));
        let two = HostBatch::from_batches(&[b.rows(1, 1), b.rows(0, 2)], Device::Cpu);
        assert_eq!(two.x.size(), vec![3, 3]);
        assert!(two.x.get(0).equal(&wx.get(1)) && two.y.narrow(0, 1, 2).equal(&wy));
    }
}
