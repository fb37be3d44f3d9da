//! Stitching (Bansal, Nakkiran, Barak 2021; Csiszárik et al. 2021): an affine map
//! `x -> x A + b` (width x width) in place of a seam's boundary norm, between a frozen lower
//! part and a frozen upper part. The closed-form least-squares fit regresses the residual the
//! upper model expects on the one that arrives; a trained map starts there and is fitted on
//! the language-modelling loss with Adam, everything else frozen.

use tch::{Device, Kind, Tensor};

/// An affine map, fp32.
pub struct Affine {
    pub a: Tensor,
    pub b: Tensor,
}

impl Affine {
    pub fn identity(width: i64, device: Device) -> Affine {
        Affine {
            a: Tensor::eye(width, (Kind::Float, device)),
            b: Tensor::zeros([width], (Kind::Float, device)),
        }
    }

    pub fn apply(&self, x: &Tensor) -> Tensor {
        x.to_kind(Kind::Float).matmul(&self.a) + &self.b
    }
}

/// `[X 1]ᵀ [X 1]` and `[X 1]ᵀ Y`, accumulated in f64.
pub struct LeastSquares {
    xtx: Tensor,
    xty: Tensor,
    pub tokens: usize,
}

impl LeastSquares {
    pub fn new(p: i64, q: i64, device: Device) -> LeastSquares {
        LeastSquares {
            xtx: Tensor::zeros([p + 1, p + 1], (Kind::Double, device)),
            xty: Tensor::zeros([p + 1, q], (Kind::Double, device)),
            tokens: 0,
        }
    }

    /// Adds rows: `x` (n x p) what arrives, `y` (n x q) what is expected.
    pub fn add(&mut self, x: &Tensor, y: &Tensor) {
        tch::no_grad(|| {
            let n = x.size()[0];
            let ones = Tensor::ones([n, 1], (Kind::Double, x.device()));
            let x1 = Tensor::cat(&[x.to_kind(Kind::Double), ones], 1);
            self.xtx += x1.tr().matmul(&x1);
            self.xty += x1.tr().matmul(&y.to_kind(Kind::Double));
            self.tokens += n as usize;
        })
    }

    /// Solves the normal equations with a small ridge (1e-8 of the mean diagonal), in f64.
    pub fn solve(&self) -> anyhow::Result<Affine> {
        tch::no_grad(|| {
            let p1 = self.xtx.size()[0];
            let diag_mean = self
                .xtx
                .diagonal(0, 0, 1)
                .mean(Kind::Double)
                .double_value(&[]);
            let ridge =
                Tensor::eye(p1, (Kind::Double, self.xtx.device())) * (1e-8 * diag_mean.max(1e-30));
            let w = Tensor::f_linalg_solve(&(&self.xtx + ridge), &self.xty, true)
                .map_err(|e| anyhow::anyhow!("the least-squares stitch has no solution: {e}"))?;
            let p = p1 - 1;
            Ok(Affine {
                a: w.narrow(0, 0, p).to_kind(Kind::Float),
                b: w.get(p).to_kind(Kind::Float),
            })
        })
    }
}

/// Adam on the map's two tensors (`torch.optim.Adam` defaults besides `lr`).
pub struct AdamOnMap {
    m: [Tensor; 2],
    v: [Tensor; 2],
    step: i32,
    lr: f64,
}

impl AdamOnMap {
    pub fn new(map: &Affine, lr: f64) -> AdamOnMap {
        AdamOnMap {
            m: [map.a.zeros_like(), map.b.zeros_like()],
            v: [map.a.zeros_like(), map.b.zeros_like()],
            step: 0,
            lr,
        }
    }

    /// One update from the maps' gradients (which it then clears).
    pub fn step(&mut self, map: &mut Affine) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        self.step += 1;
        tch::no_grad(|| {
            for (i, p) in [&mut map.a, &mut map.b].into_iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = self.m[i].g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = self.v[i].g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
                let mh = &self.m[i] / (1.0 - b1.powi(self.step));
                let vh = &self.v[i] / (1.0 - b2.powi(self.step));
                let _ = p.g_sub_(&(mh / (vh.sqrt() + eps) * self.lr));
                p.zero_grad();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_an_affine_map_and_the_identity() {
        tch::manual_seed(0);
        let x = Tensor::randn([500, 6], (Kind::Float, Device::Cpu));
        let a = Tensor::randn([6, 6], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([6], (Kind::Float, Device::Cpu));
        let y = x.matmul(&a) + &b;
        let mut ls = LeastSquares::new(6, 6, Device::Cpu);
        ls.add(&x.narrow(0, 0, 250), &y.narrow(0, 0, 250));
        ls.add(&x.narrow(0, 250, 250), &y.narrow(0, 250, 250));
        let fit = ls.solve().unwrap();
        assert!(fit.a.allclose(&a, 1e-4, 1e-4, false));
        assert!(fit.b.allclose(&b, 1e-4, 1e-4, false));
        let mut id = LeastSquares::new(6, 6, Device::Cpu);
        id.add(&x, &x);
        let fit = id.solve().unwrap();
        assert!(fit.a.allclose(
            &Tensor::eye(6, (Kind::Float, Device::Cpu)),
            1e-5,
            1e-5,
            false
        ));
    }
}
