//! Linear CKA (Kornblith et al. 2019) between two representations of the same tokens, in
//! f64, both estimates:
//!
//! - biased: columns centred over all tokens, `||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F)`, from
//!   running sums, so it is exact over any number of batches;
//! - debiased (Song et al. 2012, as in Nguyen et al. 2021): per batch, columns centred and
//!   `HSIC1(K, L)` with `K = X Xᵀ`, `L = Y Yᵀ`, diagonals zeroed; each HSIC1 is summed over
//!   batches before the ratio is taken (never an average of per-batch CKA values).
//!
//! Everything is computed in feature space (`Xᵀ Y`, row norms), never as n x n Gram
//! matrices, so a batch may hold tens of thousands of tokens.

use tch::{Kind, Tensor};

/// Sums over batches for one pair (X, Y).
pub struct Cka {
    n: f64,
    sx: Tensor,
    sy: Tensor,
    xty: Tensor,
    xtx: Tensor,
    yty: Tensor,
    hsic_xy: f64,
    hsic_xx: f64,
    hsic_yy: f64,
    debiased_tokens: usize,
}

/// The terms of `HSIC1(K, L)` for a batch, with K = X Xᵀ and L = Y Yᵀ (X, Y already centred).
fn hsic1(x: &Tensor, y: &Tensor, xty_fro2: f64) -> Option<f64> {
    let n = x.size()[0] as f64;
    if n < 4.0 {
        return None;
    }
    let dk = x
        .pow_tensor_scalar(2)
        .sum_dim_intlist(1, false, Kind::Double);
    let dl = y
        .pow_tensor_scalar(2)
        .sum_dim_intlist(1, false, Kind::Double);
    let tr = xty_fro2 - (&dk * &dl).sum(Kind::Double).double_value(&[]);
    let ones_x = x.sum_dim_intlist(0, false, Kind::Double);
    let ones_y = y.sum_dim_intlist(0, false, Kind::Double);
    let k1 = x.matmul(&ones_x.unsqueeze(1)).squeeze_dim(1) - &dk;
    let l1 = y.matmul(&ones_y.unsqueeze(1)).squeeze_dim(1) - &dl;
    let sum_k = k1.sum(Kind::Double).double_value(&[]);
    let sum_l = l1.sum(Kind::Double).double_value(&[]);
    let kl = (&k1 * &l1).sum(Kind::Double).double_value(&[]);
    Some((tr + sum_k * sum_l / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * kl) / (n * (n - 3.0)))
}

fn centred(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Double);
    &x - x.mean_dim(0, true, Kind::Double)
}

fn fro2(t: &Tensor) -> f64 {
    t.pow_tensor_scalar(2).sum(Kind::Double).double_value(&[])
}

impl Cka {
    pub fn new(p: i64, q: i64, device: tch::Device) -> Cka {
        let z = |s: &[i64]| Tensor::zeros(s, (Kind::Double, device));
        Cka {
            n: 0.0,
            sx: z(&[p]),
            sy: z(&[q]),
            xty: z(&[p, q]),
            xtx: z(&[p, p]),
            yty: z(&[q, q]),
            hsic_xy: 0.0,
            hsic_xx: 0.0,
            hsic_yy: 0.0,
            debiased_tokens: 0,
        }
    }

    /// Adds a batch: rows are tokens, the same tokens in `x` (n x p) and `y` (n x q).
    pub fn add(&mut self, x: &Tensor, y: &Tensor) {
        tch::no_grad(|| {
            let xd = x.to_kind(Kind::Double);
            let yd = y.to_kind(Kind::Double);
            self.n += xd.size()[0] as f64;
            self.sx += xd.sum_dim_intlist(0, false, Kind::Double);
            self.sy += yd.sum_dim_intlist(0, false, Kind::Double);
            self.xty += xd.tr().matmul(&yd);
            self.xtx += xd.tr().matmul(&xd);
            self.yty += yd.tr().matmul(&yd);
            let (xc, yc) = (centred(x), centred(y));
            let cxy = fro2(&xc.tr().matmul(&yc));
            let cxx = fro2(&xc.tr().matmul(&xc));
            let cyy = fro2(&yc.tr().matmul(&yc));
            if let (Some(a), Some(b), Some(c)) = (
                hsic1(&xc, &yc, cxy),
                hsic1(&xc, &xc, cxx),
                hsic1(&yc, &yc, cyy),
            ) {
                self.hsic_xy += a;
                self.hsic_xx += b;
                self.hsic_yy += c;
                self.debiased_tokens += xc.size()[0] as usize;
            }
        })
    }

    pub fn tokens(&self) -> usize {
        self.n as usize
    }

    /// The biased estimate over every token added, columns centred globally.
    pub fn biased(&self) -> f64 {
        tch::no_grad(|| {
            let n = self.n;
            let outer = |a: &Tensor, b: &Tensor| a.unsqueeze(1).matmul(&b.unsqueeze(0)) / n;
            let cxy = &self.xty - outer(&self.sx, &self.sy);
            let cxx = &self.xtx - outer(&self.sx, &self.sx);
            let cyy = &self.yty - outer(&self.sy, &self.sy);
            fro2(&cxy) / (fro2(&cxx).sqrt() * fro2(&cyy).sqrt())
        })
    }

    /// The debiased estimate (can be negative); NaN when no batch had 4 or more tokens.
    pub fn debiased(&self) -> f64 {
        if self.debiased_tokens == 0 {
            return f64::NAN;
        }
        self.hsic_xy / (self.hsic_xx * self.hsic_yy).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn randn(n: i64, p: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([n, p], (Kind::Double, Device::Cpu))
    }

    fn cka_of(x: &Tensor, y: &Tensor, batches: i64) -> Cka {
        let mut c = Cka::new(x.size()[1], y.size()[1], Device::Cpu);
        let n = x.size()[0];
        let step = n / batches;
        for b in 0..batches {
            c.add(&x.narrow(0, b * step, step), &y.narrow(0, b * step, step));
        }
        c
    }

    #[test]
    fn a_representation_with_itself_is_one_and_rotation_and_scale_do_not_matter() {
        let x = randn(300, 12, 1);
        let c = cka_of(&x, &x, 3);
        assert!((c.biased() - 1.0).abs() < 1e-12, "{}", c.biased());
        assert!((c.debiased() - 1.0).abs() < 1e-12, "{}", c.debiased());
        // An orthogonal rotation and an isotropic scale of Y leave CKA unchanged.
        let y = x.narrow(1, 0, 8).matmul(&randn(8, 8, 2)) + randn(300, 8, 3) * 0.5;
        let (q, _) = Tensor::linalg_qr(&randn(8, 8, 4), "reduced");
        let rotated = y.matmul(&q) * 3.7;
        let (a, b) = (cka_of(&x, &y, 3), cka_of(&x, &rotated, 3));
        assert!((a.biased() - b.biased()).abs() < 1e-10);
        assert!((a.debiased() - b.debiased()).abs() < 1e-10);
        assert!(a.biased() > 0.1 && a.biased() < 0.99, "{}", a.biased());
    }

    /// HSIC1 written out with the n x n Gram matrices, as the definition reads.
    fn hsic1_direct(k: &Tensor, l: &Tensor) -> f64 {
        let n = k.size()[0];
        let eye = Tensor::eye(n, (Kind::Double, Device::Cpu));
        let off = eye.ones_like() - &eye;
        let kt = k * &off;
        let lt = l * &off;
        let ones = Tensor::ones([n, 1], (Kind::Double, Device::Cpu));
        let nf = n as f64;
        let tr = kt.matmul(&lt).trace().double_value(&[]);
        let sk = ones.tr().matmul(&kt).matmul(&ones).double_value(&[0, 0]);
        let sl = ones.tr().matmul(&lt).matmul(&ones).double_value(&[0, 0]);
        let kl = ones
            .tr()
            .matmul(&kt)
            .matmul(&lt)
            .matmul(&ones)
            .double_value(&[0, 0]);
        (tr + sk * sl / ((nf - 1.0) * (nf - 2.0)) - 2.0 / (nf - 2.0) * kl) / (nf * (nf - 3.0))
    }

    #[test]
    fn debiased_equals_the_direct_gram_matrix_computation() {
        let x = randn(40, 6, 5);
        let y = x.narrow(1, 0, 3).matmul(&randn(3, 5, 6)) + randn(40, 5, 7);
        let c = cka_of(&x, &y, 2);
        // Two batches of 20: HSIC1 summed over batches, each on per-batch centred columns.
        let (mut hxy, mut hxx, mut hyy) = (0.0, 0.0, 0.0);
        for b in 0..2 {
            let xb = centred(&x.narrow(0, b * 20, 20));
            let yb = centred(&y.narrow(0, b * 20, 20));
            let (k, l) = (xb.matmul(&xb.tr()), yb.matmul(&yb.tr()));
            hxy += hsic1_direct(&k, &l);
            hxx += hsic1_direct(&k, &k);
            hyy += hsic1_direct(&l, &l);
        }
        let want = hxy / (hxx * hyy).sqrt();
        assert!(
            (c.debiased() - want).abs() < 1e-10,
            "{} vs {want}",
            c.debiased()
        );
        // The biased estimate equals the formula on globally centred data.
        let (xc, yc) = (centred(&x), centred(&y));
        let want_b = fro2(&yc.tr().matmul(&xc))
            / (fro2(&xc.tr().matmul(&xc)).sqrt() * fro2(&yc.tr().matmul(&yc)).sqrt());
        assert!((c.biased() - want_b).abs() < 1e-12);
    }
}
