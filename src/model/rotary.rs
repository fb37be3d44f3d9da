//! Rotary position embedding as the seed computes it: `inv_freq = 1/10000^(arange(0,d,2)/d)`,
//! `f = outer(t, inv_freq)`, and fp32 cos/sin tables (the seed's script keeps them fp32; later
//! modded-nanogpt records cache them in bf16). Under bf16 compute the rotation therefore
//! runs in fp32 (bf16 q/k times fp32 tables) and is cast back, as the seed's autocast did.

use tch::{Device, Kind, Tensor};

pub struct RotaryTables {
    /// (1, T, 1, d/2), fp32.
    pub cos: Tensor,
    pub sin: Tensor,
    /// (1, T, 1, d): `cos` twice, and `sin` then `-sin`, so one rotation is
    /// `x * cos2 + swap(x) * sin2` over the whole head (negation is exact: the products are
    /// the seed's bits).
    cos2: Tensor,
    sin2: Tensor,
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
        let cos = f.cos().view(shape);
        RotaryTables {
            cos2: Tensor::cat(&[&cos, &cos], 3),
            sin2: Tensor::cat(&[&sin, &-&sin], 3),
            cos,
            sin,
        }
    }

    /// Rotates q or k, shaped (B, T, heads, head_dim); computed in fp32 (type promotion
    /// against the fp32 tables), the result keeps x's dtype.
    ///
    /// The seed's `[x1·cos + x2·sin, -x1·sin + x2·cos]`, as `x·[cos, cos] + [x2, x1]·[sin, -sin]`:
    /// the same products added in the same pairs (addition commutes exactly), so the same
    /// bits, in four kernels instead of seven (and fewer in the backward pass).
    ///
    /// The sum is added in place into the first product, so a bf16 rotation makes two fp32
    /// full-size temporaries rather than three (autograd saves neither product: their
    /// gradients need only the tables). The fp32 products stay: they are the seed's
    /// numerics (bf16 q and k promoted against fp32 tables).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let mut y = x * &self.cos2;
        // `[x2, x1]` as a roll by half the head: one kernel, and one in the backward pass.
        y += x.roll([x.size()[3] / 2], [3]) * &self.sin2;
        y.to_kind(x.kind())
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

    /// The four-kernel rotation gives the seed's formula bit for bit, in fp32 and from bf16.
    #[test]
    fn rotation_equals_the_seeds_formula_exactly() {
        let r = RotaryTables::new(7, 16, Device::Cpu);
        tch::manual_seed(1);
        let x = Tensor::randn([2, 7, 3, 16], (Kind::Float, Device::Cpu));
        for x in [x.shallow_clone(), x.to_kind(Kind::BFloat16)] {
            let xf = x.to_kind(Kind::Float);
            let (x1, x2) = (xf.narrow(3, 0, 8), xf.narrow(3, 8, 8));
            let seed = Tensor::cat(
                &[&x1 * &r.cos + &x2 * &r.sin, -&x1 * &r.sin + &x2 * &r.cos],
                3,
            )
            .to_kind(x.kind());
            assert!(r.apply(&x).equal(&seed), "{:?}", x.kind());
        }
    }
}
