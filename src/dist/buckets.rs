//! Gradients all-reduced in flat buckets, as PyTorch's DDP does: the parameters in the
//! order backward finishes their gradients (the reverse of their first use in the forward
//! pass), packed into buffers of about [`BUCKET_BYTES`], one collective per bucket.
//!
//! With overlap (`csrc/dist_buckets.cpp`), each parameter's gradient accumulator has a post
//! hook: once the step's last backward pass is [armed](GradBuckets::arm), a bucket's
//! all-reduce starts as soon as its last gradient is in, while backward still runs on the
//! layers below. Buckets start in order, so every process issues the same collectives in
//! the same order.

use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};
use torch_sys::C_tensor;

use super::ffi::{self, Err};
use super::group::ProcessGroup;

/// DDP's default bucket size (25 MiB).
pub const BUCKET_BYTES: i64 = 25 << 20;

fn element_bytes(k: Kind) -> i64 {
    match k {
        Kind::Double | Kind::Int64 => 8,
        Kind::Half | Kind::BFloat16 => 2,
        _ => 4,
    }
}

/// Which parameters share a bucket: `order` lists the parameters (indices into the list
/// the plan was made from) in the order backward finishes them; bucket k holds the next
/// `sizes[k]` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    pub order: Vec<usize>,
    pub sizes: Vec<i64>,
    /// Bytes all-reduced per step.
    pub bytes: i64,
}

impl BucketPlan {
    /// The plan for `params`, listed in the order the forward pass first uses them: filled
    /// from the last backwards, at most `bucket_bytes` a bucket (a larger parameter alone),
    /// one dtype a bucket.
    pub fn new(params: &[&Tensor], bucket_bytes: i64) -> BucketPlan {
        let mut plan = BucketPlan {
            order: Vec::with_capacity(params.len()),
            sizes: Vec::new(),
            bytes: 0,
        };
        let mut open: Option<(Kind, i64)> = None;
        for (i, p) in params.iter().enumerate().rev() {
            let (kind, numel) = (p.kind(), p.numel() as i64);
            let fits = open.is_some_and(|(k, n)| {
                k == kind && (n + numel) * element_bytes(kind) <= bucket_bytes
            });
            if !fits {
                plan.sizes.push(0);
                open = Some((kind, 0));
            }
            if let (Some((_, n)), Some(size)) = (open.as_mut(), plan.sizes.last_mut()) {
                *n += numel;
                *size += 1;
            }
            plan.order.push(i);
            plan.bytes += numel * element_bytes(kind);
        }
        plan
    }

    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }
}

/// The shim's marker of a failure of this process's own (not of a collective).
const LOCAL: &str = "[local] ";

/// A failed launch or wait: a collective's failure names the other processes as its likely
/// cause; one of this process's own says what it is.
fn failure(group: &ProcessGroup, msg: String) -> anyhow::Error {
    match msg.strip_prefix(LOCAL) {
        Some(own) => anyhow::anyhow!(
            "the gradients' all-reduce on rank {} of {}: {own}",
            group.rank,
            group.world
        ),
        None => group.failed("the gradients' all-reduce", msg),
    }
}

/// Flat buffers for the gradients of a fixed list of parameters, bound to one process
/// group (and, with overlap, hooked into the parameters' gradient accumulators).
pub struct GradBuckets {
    handle: NonNull<c_void>,
    plan: BucketPlan,
    overlap: bool,
    from_hooks: std::cell::Cell<usize>,
}

impl GradBuckets {
    /// Buckets for the gradients of `params` (listed in the order the forward pass first
    /// uses them) summed over `group`; with `overlap`, armed backward passes start them.
    pub fn new(
        group: &ProcessGroup,
        params: &[&Tensor],
        bucket_bytes: i64,
        overlap: bool,
    ) -> Result<GradBuckets> {
        let plan = BucketPlan::new(params, bucket_bytes);
        let ordered: Vec<*mut C_tensor> = plan
            .order
            .iter()
            .map(|&i| params[i].as_ptr() as *mut C_tensor)
            .collect();
        let ids: Vec<i64> = plan.order.iter().map(|&i| i as i64).collect();
        let mut err = Err::new();
        // SAFETY: a live group, parameter tensors that outlive the call (the shim keeps its
        // own references), `ids` as many as them, `sizes` of `nb` entries, and an error
        // buffer of its length.
        let handle = unsafe {
            ffi::stacklab_dist_buckets_new(
                group.group,
                ordered.as_ptr(),
                ids.as_ptr(),
                ordered.len() as c_int,
                plan.sizes.as_ptr(),
                plan.sizes.len() as c_int,
                overlap as c_int,
                err.ptr(),
                err.len(),
            )
        };
        let Some(handle) = NonNull::new(handle) else {
            bail!("the gradient buckets could not be made: {}", err.message());
        };
        Ok(GradBuckets {
            handle,
            plan,
            overlap,
            from_hooks: std::cell::Cell::new(0),
        })
    }

    pub fn plan(&self) -> &BucketPlan {
        &self.plan
    }

    /// Bytes all-reduced per step.
    pub fn bytes(&self) -> i64 {
        self.plan.bytes
    }

    pub fn len(&self) -> usize {
        self.plan.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }

    /// Whether backward passes start the all-reduces (once armed).
    pub fn overlaps(&self) -> bool {
        self.overlap
    }

    /// The next backward pass is the step's last: as each bucket's gradients are in, its
    /// all-reduce starts. Call it right before that pass's `backward`.
    pub fn arm(&self) {
        if self.overlap {
            // SAFETY: a live handle.
            unsafe { ffi::stacklab_dist_buckets_arm(self.handle.as_ptr()) };
        }
    }

    /// Starts the all-reduce of every bucket backward did not start (all of them when no
    /// pass was armed), without waiting.
    pub fn launch(&self, group: &ProcessGroup) -> Result<()> {
        let mut err = Err::new();
        // SAFETY: a live handle and an error buffer of its length.
        let rc = unsafe {
            ffi::stacklab_dist_buckets_launch(self.handle.as_ptr(), err.ptr(), err.len())
        };
        if rc != 0 {
            return Err(failure(group, err.message()));
        }
        Ok(())
    }

    /// Waits for every bucket and writes the sums into the gradients.
    pub fn wait(&self, group: &ProcessGroup) -> Result<()> {
        let mut err = Err::new();
        let mut from_hooks: c_int = 0;
        // SAFETY: a live handle, an out-integer and an error buffer of its length.
        let rc = unsafe {
            ffi::stacklab_dist_buckets_wait(
                self.handle.as_ptr(),
                &mut from_hooks,
                err.ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(failure(group, err.message()));
        }
        self.from_hooks.set(from_hooks.max(0) as usize);
        Ok(())
    }

    /// Sums every parameter's gradient over the processes, in place: starts what backward
    /// did not, and waits for all of it.
    pub fn all_reduce(&self, group: &ProcessGroup) -> Result<()> {
        self.launch(group)?;
        self.wait(group)
    }

    /// Of the last step's buckets, how many backward started (the rest started after it).
    pub fn started_in_backward(&self) -> usize {
        self.from_hooks.get()
    }
}

impl Drop for GradBuckets {
    fn drop(&mut self) {
        // SAFETY: made by `stacklab_dist_buckets_new`, freed once; this removes its hooks.
        unsafe { ffi::stacklab_dist_buckets_free(self.handle.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_plan_fills_buckets_from_the_last_parameter_and_keeps_dtypes_apart() {
        let t = |n: i64, k: Kind| Tensor::zeros([n], (k, Device::Cpu));
        let ps = [
            t(10, Kind::Float),
            t(5, Kind::Float),
            t(5, Kind::Float),
            t(40, Kind::Float),
            t(3, Kind::BFloat16),
        ];
        let refs: Vec<&Tensor> = ps.iter().collect();
        let plan = BucketPlan::new(&refs, 64);
        // bf16 alone; 160 bytes alone (over the size); then 5 + 5 floats (40 bytes), 10 floats.
        assert_eq!(plan.order, vec![4, 3, 2, 1, 0]);
        assert_eq!(plan.sizes, vec![1, 1, 2, 1]);
        assert_eq!(plan.bytes, 6 + 4 * 60);
        assert_eq!(plan.len(), 4);
    }

    /// GPT-2 small (the seed's config), planned from views that hold no memory: with `W`
    /// training, 17 buckets of 494.3 MB, each three block matrices but `W`'s own, last; with
    /// `W` frozen, 16 of 339.7 MB.
    #[test]
    fn gpt2_small_plans_into_seventeen_buckets_with_w_alone_and_last() {
        let (v, c) = (50304, 768);
        let one = Tensor::zeros([1, 1], (Kind::Float, Device::Cpu));
        let mut ps = vec![one.expand([v, c], false)];
        for _ in 0..12 {
            // c_attn, attn.c_proj, c_fc, mlp.c_proj
            for shape in [[3 * c, c], [c, c], [4 * c, c], [c, 4 * c]] {
                ps.push(one.expand(shape, false));
            }
        }
        let refs: Vec<&Tensor> = ps.iter().collect();
        let plan = BucketPlan::new(&refs, BUCKET_BYTES);
        assert_eq!(plan.len(), 17);
        assert_eq!(plan.bytes, 494_272_512);
        assert_eq!(plan.sizes[..16], [3; 16]);
        assert_eq!((plan.sizes[16], *plan.order.last().unwrap()), (1, 0));
        let frozen = BucketPlan::new(&refs[1..], BUCKET_BYTES);
        assert_eq!((frozen.len(), frozen.bytes), (16, 339_738_624));
    }
}
