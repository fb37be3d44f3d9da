//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay, bias correction), for the
//! shared embedding/lm-head `W`. Its state is plain tensors, so checkpoints can hold it.

use tch::{Kind, Tensor};

use crate::config::AdamWConfig;

pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Optimizer steps taken (for bias correction).
    pub step: i64,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

impl AdamW {
    pub fn new(cfg: &AdamWConfig, param: &Tensor) -> AdamW {
        AdamW {
            cfg: cfg.clone(),
            step: 0,
            exp_avg: param.zeros_like().to_kind(Kind::Float),
            exp_avg_sq: param.zeros_like().to_kind(Kind::Float),
        }
    }

    /// One update of `param` from its gradient, with the base lr times `lr_factor`.
    pub fn step(&mut self, param: &Tensor, lr_factor: f64) {
        tch::no_grad(|| {
            let grad = param.grad();
            if !grad.defined() {
                return;
            }
            self.step += 1;
            let lr = self.cfg.lr * lr_factor;
            let [b1, b2] = self.cfg.betas;
            let mut p = param.shallow_clone();
            if self.cfg.weight_decay != 0.0 {
                let _ = p.g_mul_scalar_(1.0 - lr * self.cfg.weight_decay);
            }
            let _ = self.exp_avg.lerp_(&grad, 1.0 - b1);
            let _ = self.exp_avg_sq.g_mul_scalar_(b2);
            let _ = self.exp_avg_sq.addcmul_(&grad, &(&grad * (1.0 - b2)));
            let bias1 = 1.0 - b1.powi(self.step as i32);
            let bias2 = 1.0 - b2.powi(self.step as i32);
            let step_size = lr / bias1;
            let denom = (self.exp_avg_sq.sqrt() / bias2.sqrt()) + self.cfg.eps;
            let _ = p.addcdiv_(&(&self.exp_avg * (-step_size)), &denom);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_adamw_formula_over_two_steps() {
        let cfg = AdamWConfig {
            lr: 0.1,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let p0 = [1.0f64, -2.0, 0.5];
        let grads = [[0.3f64, -0.1, 2.0], [-0.2, 0.4, 1.0]];
        let p = Tensor::from_slice(&p0.map(|x| x as f32)).set_requires_grad(true);
        let mut opt = AdamW::new(&cfg, &p);
        let (mut m, mut v, mut want) = ([0.0f64; 3], [0.0f64; 3], p0);
        for (t, g) in grads.iter().enumerate() {
            let factor = 0.5;
            let gt = Tensor::from_slice(&g.map(|x| x as f32));
            // Set the gradient: d/dp sum(p * g) = g.
            let mut pp = p.shallow_clone();
            pp.zero_grad();
            (&p * &gt).sum(Kind::Float).backward();
            opt.step(&p, factor);
            let lr = cfg.lr * factor;
            let step = (t + 1) as i32;
            for i in 0..3 {
                want[i] *= 1.0 - lr * cfg.weight_decay;
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(step));
                let vh = v[i] / (1.0 - 0.95f64.powi(step));
                want[i] -= lr * mh / (vh.sqrt() + cfg.eps);
            }
        }
        let got: Vec<f32> = Vec::<f32>::try_from(&p.detach()).unwrap();
        for i in 0..3 {
            assert!(
                (got[i] as f64 - want[i]).abs() < 1e-5,
                "{got:?} vs {want:?}"
            );
        }
    }
}
