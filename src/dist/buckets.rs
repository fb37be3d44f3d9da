//! Gradients all-reduced in flat buckets, as PyTorch's DDP does: the parameters, last layers
//! first (the order backward produces them), packed into buffers of about
//! [`BUCKET_BYTES`]; one collective per bucket. Each bucket's collective starts as soon as
//! its buffer is packed, so packing the next bucket and unpacking a finished one overlap
//! with the communication still running.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::group::{ProcessGroup, ReduceOp};

/// DDP's default bucket size (25 MiB).
pub const BUCKET_BYTES: i64 = 25 << 20;

struct Member {
    param: usize,
    offset: i64,
    numel: i64,
}

struct Bucket {
    flat: Tensor,
    members: Vec<Member>,
}

/// Flat buffers for the gradients of a fixed list of parameters.
pub struct GradBuckets {
    buckets: Vec<Bucket>,
    bytes: i64,
}

fn element_bytes(k: Kind) -> i64 {
    match k {
        Kind::Double | Kind::Int64 => 8,
        Kind::Half | Kind::BFloat16 => 2,
        _ => 4,
    }
}

impl GradBuckets {
    /// Buckets for `params` (their gradients have their kind and device), filled from the
    /// last parameter backwards, at most `bucket_bytes` each (a larger parameter alone).
    pub fn new(params: &[&Tensor], bucket_bytes: i64) -> GradBuckets {
        let mut plan: Vec<(Kind, Vec<Member>, i64)> = Vec::new();
        for (i, p) in params.iter().enumerate().rev() {
            let (kind, numel) = (p.kind(), p.numel() as i64);
            let fits = plan.last().is_some_and(|(k, _, n)| {
                *k == kind && (n + numel) * element_bytes(kind) <= bucket_bytes
            });
            if !fits {
                plan.push((kind, Vec::new(), 0));
            }
            let (_, members, n) = plan.last_mut().expect("a bucket was pushed");
            members.push(Member {
                param: i,
                offset: *n,
                numel,
            });
            *n += numel;
        }
        let device = params
            .first()
            .map(|p| p.device())
            .unwrap_or(tch::Device::Cpu);
        let buckets: Vec<Bucket> = plan
            .into_iter()
            .map(|(kind, members, n)| Bucket {
                flat: Tensor::zeros([n], (kind, device)),
                members,
            })
            .collect();
        let bytes = buckets
            .iter()
            .map(|b| b.flat.numel() as i64 * element_bytes(b.flat.kind()))
            .sum();
        GradBuckets { buckets, bytes }
    }

    /// Bytes all-reduced per step.
    pub fn bytes(&self) -> i64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Sums every parameter's gradient over the processes, in place.
    pub fn all_reduce(&self, group: &ProcessGroup, params: &[&Tensor]) -> Result<()> {
        tch::no_grad(|| {
            let mut pending = Vec::with_capacity(self.buckets.len());
            for b in &self.buckets {
                for m in &b.members {
                    let g = params[m.param].grad();
                    if !g.defined() {
                        bail!("parameter #{} has no gradient to all-reduce", m.param);
                    }
                    b.flat.narrow(0, m.offset, m.numel).copy_(&g.reshape([-1]));
                }
                pending.push(group.start_all_reduce(&[&b.flat], ReduceOp::Sum)?);
            }
            for (b, p) in self.buckets.iter().zip(pending) {
                p.wait()?;
                for m in &b.members {
                    let mut g = params[m.param].grad();
                    let part = b.flat.narrow(0, m.offset, m.numel).view_as(&g);
                    g.copy_(&part);
                }
            }
            Ok(())
        })
    }
}
