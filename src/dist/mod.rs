//! Data-parallel training on PyTorch's own distributed engine, c10d, through a small C++
//! shim (`csrc/dist.cpp`): a process group from the torchrun or Slurm environment
//! ([`env`]), Gloo on the CPU and NCCL on CUDA ([`group`]), gradients all-reduced in flat
//! buckets ([`buckets`]); `train --nproc N`'s local launcher is [`crate::jobs::ranks`].
//!
//! Every collective waits at most the group's timeout: a process that dies or stops
//! answering makes the others fail with a message, never hang.

pub mod buckets;
pub mod env;
mod ffi;
pub mod group;
mod nccl;

use std::time::Duration;

use anyhow::Result;
use tch::{Device, Tensor};

pub use buckets::GradBuckets;
pub use buckets::BUCKET_BYTES;
pub use env::Launch;
pub use group::{Backend, ProcessGroup, ReduceOp};

/// The default collective timeout (`--dist-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether this build has c10d's Gloo backend (its headers were found when it was built).
pub fn has_gloo() -> bool {
    // SAFETY: a constant answer from the shim.
    unsafe { ffi::stacklab_dist_has_gloo() != 0 }
}

/// Whether this build has c10d's NCCL backend.
pub fn has_nccl() -> bool {
    nccl::compiled()
}

/// How the build went for Gloo ("with Gloo (/usr/include)", "without Gloo (...)").
pub fn gloo_build() -> &'static str {
    env!("STACKLAB_DIST_GLOO_BUILD")
}

/// How the build went for NCCL.
pub fn nccl_build() -> &'static str {
    env!("STACKLAB_DIST_NCCL_BUILD")
}

/// This process among the training's processes: alone, or rank `rank` of `size` in a group.
pub struct World {
    group: Option<ProcessGroup>,
    pub rank: usize,
    pub size: usize,
    pub launch: Option<Launch>,
}

impl World {
    /// One process, no group.
    pub fn single() -> World {
        World {
            group: None,
            rank: 0,
            size: 1,
            launch: None,
        }
    }

    /// The group of `launch` on `device`.
    pub fn connect(launch: Launch, device: Device, timeout: Duration) -> Result<World> {
        let group = ProcessGroup::connect(&launch, device, timeout)?;
        Ok(World {
            rank: launch.rank,
            size: launch.world,
            group: Some(group),
            launch: Some(launch),
        })
    }

    /// Rank 0, the process that writes the run's files.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    pub fn group(&self) -> Option<&ProcessGroup> {
        self.group.as_ref()
    }

    /// In-place all-reduce of each tensor; nothing to do alone.
    pub fn all_reduce(&self, ts: &[&Tensor], op: ReduceOp) -> Result<()> {
        match &self.group {
            Some(g) => g.all_reduce(ts, op),
            None => Ok(()),
        }
    }

    /// Rank `root`'s values of the tensors, in place everywhere.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        match &self.group {
            Some(g) => g.broadcast(ts, root),
            None => Ok(()),
        }
    }

    pub fn barrier(&self) -> Result<()> {
        match &self.group {
            Some(g) => g.barrier(),
            None => Ok(()),
        }
    }

    /// "1 process" or "rank 1 of 4 (gloo)".
    pub fn describe(&self) -> String {
        match &self.group {
            None => "1 process".into(),
            Some(g) => format!("rank {} of {} ({})", self.rank, self.size, g.backend.name()),
        }
    }
}
