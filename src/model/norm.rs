//! Weightless norms, computed in fp32 and cast back to the input's dtype (as the seed does).

use tch::{Kind, Tensor};

use crate::config::NormKind;

pub const EPS: f64 = 1e-6;

pub fn rms_norm(x: &Tensor) -> Tensor {
    let c = *x.size().last().expect("a norm needs at least one dim");
    let kind = x.kind();
    // The fused kernel (one pass) rather than pow/mean/rsqrt/mul: same formula, x·rsqrt(mean(x²)+eps).
    x.to_kind(Kind::Float)
        .rms_norm([c], None::<Tensor>, EPS)
        .to_kind(kind)
}

pub fn layer_norm(x: &Tensor) -> Tensor {
    let c = *x.size().last().expect("a norm needs at least one dim");
    let kind = x.kind();
    x.to_kind(Kind::Float)
        .layer_norm([c], None::<Tensor>, None::<Tensor>, EPS, true)
        .to_kind(kind)
}

pub fn apply_norm(x: &Tensor, kind: NormKind) -> Tensor {
    match kind {
        NormKind::None => x.shallow_clone(),
        NormKind::RmsNorm => rms_norm(x),
        NormKind::LayerNorm => layer_norm(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_match_their_formulas() {
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, 4.0, -1.0, 0.0, 2.0]).view([2, 4]);
        let rms = rms_norm(&x);
        let expect = &x * (x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float) + EPS).rsqrt();
        assert!(rms.allclose(&expect, 1e-6, 1e-6, false));
        let ln = layer_norm(&x);
        let mu = x.mean_dim(-1, true, Kind::Float);
        let var = (&x - &mu)
            .pow_tensor_scalar(2)
            .mean_dim(-1, true, Kind::Float);
        let expect = (&x - mu) * (var + EPS).rsqrt();
        assert!(ln.allclose(&expect, 1e-5, 1e-5, false));
        assert!(apply_norm(&x, NormKind::None).equal(&x));
    }
}
