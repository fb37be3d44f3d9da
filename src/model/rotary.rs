//! Rotary position embedding as the seed computes it: `inv_freq = 1/10000^(arange(0,d,2)/d)`,
//! `f = outer(t, inv_freq)`, and fp32 cos/sin tables (the seed's script keeps them fp32; later
//! modded-nanogpt records cache them in bf16). Under bf16 compute the rotation therefore
//! runs in fp32 (bf16 q/k times fp32 tables) and is cast back, as the seed's autocast did.

use tch::{Device, Kind, Tensor};

pub struct RotaryTables {
    /// (1, T, 1, d/2), fp32.
    pub cos: Tensor,
    pub sin: Tensor,
    /// `-sin`, negated once (negation is exact: the products are the seed's bits).
    neg_sin: Tensor,
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
        let sin = f.sin().view(shape);
        RotaryTables {
            cos: f.cos().view(shape),
            neg_sin: -&sin,
            sin,
        }
    }

    /// Rotates q or k, shaped (B, T, heads, head_dim); computed in fp32 (type promotion
    /// against the fp32 tables), the result keeps x's dtype.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let d = x.size()[3] / 2;
        let x1 = x.narrow(3, 0, d);
        let x2 = x.narrow(3, d, d);
        let y1 = &x1 * &self.cos + &x2 * &self.sin;
        let y2 = &x1 * &self.neg_sin + &x2 * &self.cos;
        Tensor::cat(&[y1, y2], 3).to_kind(x.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_fp32_and_bf16_inputs_rotate_in_fp32() {
        let r = RotaryTables::new(5, 8, Device::Cpu);
        assert_eq!(r.cos.kind(), Kind::Float);
        tch::manual_seed(0);
        let x = Tensor::randn([1, 5, 2, 8], (Kind::Float, Device::Cpu));
        let xb = x.to_kind(Kind::BFloat16);
        let got = r.apply(&xb);
        assert_eq!(got.kind(), Kind::BFloat16);
        // The seed: bf16 q times fp32 tables promotes to fp32, rounded to bf16 once at the end.
        let want = r.apply(&xb.to_kind(Kind::Float)).to_kind(Kind::BFloat16);
        assert!(got.equal(&want));
    }
}
