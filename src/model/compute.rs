//! The numerics of a forward pass, which the model and its loss head share.

use tch::{Device, Kind};

/// Numerics of a forward pass: which dtype the matmuls and attention run in. The residual
/// stream, the norms and the loss stay fp32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    /// Everything fp32 (the CPU, and validation, as the seed's fp32 eval).
    Fp32,
    /// Matmuls and attention in bf16: what the seed's bf16 autocast did on CUDA.
    Bf16,
}

impl Compute {
    pub fn kind(self) -> Kind {
        match self {
            Compute::Fp32 => Kind::Float,
            Compute::Bf16 => Kind::BFloat16,
        }
    }
    /// The training numerics for a device and a config's `precision`.
    pub fn for_training(device: Device, precision: crate::config::Precision) -> Compute {
        use crate::config::Precision;
        match precision {
            Precision::Fp32 => Compute::Fp32,
            Precision::Bf16 => Compute::Bf16,
            Precision::Auto => {
                if device.is_cuda() {
                    Compute::Bf16
                } else {
                    Compute::Fp32
                }
            }
        }
    }
}
