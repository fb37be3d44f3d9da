//! Rotary position embedding as the seed computes it: `inv_freq = 1/10000^(arange(0,d,2)/d)`,
//! `f = outer(t, inv_freq)`, and cos/sin tables rounded to bf16 (the seed caches them as
//! bf16, so even its fp32 validation rotates with bf16-rounded tables).

use tch::{Device, Kind, Tensor};

pub struct RotaryTables {
    /// (1, T, 1, d/2), bf16.
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RotaryTables {
    pub fn new(seq_len: i64, head_dim: i64, device: Device) -> RotaryTables {
        let opts = (Kind::Float, device);
        // The same ops as `1.0 / (10000 ** (arange(0, d, 2).float() / d))`, for identical bits.
        let exponent =
            Tensor::arange_start_step(0, head_dim, 2, opts).divide_scalar(head_dim as f64);
        let inv_freq = Tensor::pow_scalar(10000.0, &exponent).reciprocal();
        let t = Tensor::arange(seq_len, opts);
        let f = t.outer(&inv_freq);
        let shape = [1, seq_len, 1, head_dim / 2];
        RotaryTables {
            cos: f.cos().to_kind(Kind::BFloat16).view(shape),
            sin: f.sin().to_kind(Kind::BFloat16).view(shape),
        }
    }

    /// Rotates q or k, shaped (B, T, heads, head_dim); the result keeps x's dtype.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let d = x.size()[3] / 2;
        let x1 = x.narrow(3, 0, d);
        let x2 = x.narrow(3, d, d);
        let y1 = &x1 * &self.cos + &x2 * &self.sin;
        let y2 = &x1 * (-&self.sin) + &x2 * &self.cos;
        Tensor::cat(&[y1, y2], 3).to_kind(x.kind())
    }
}
