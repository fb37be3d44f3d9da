//! Muon as the seed runs it: Nesterov momentum, then Newton-Schulz orthogonalisation of the
//! update (bf16 on CUDA, fp32 on the CPU), the qkv matrix split into its three C x C parts,
//! and the update scaled by `sqrt(C)` for those parts and `sqrt(max(rows, cols))` otherwise.
//! Matrices of the same shape are orthogonalised together, one batched matmul chain per shape.

use std::collections::BTreeMap;

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::config::MuonConfig;
use crate::dist::{ReduceOp, World};

const NS_COEFFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);
const NS_EPS: f64 = 1e-7;

/// Newton-Schulz iteration on a batch of matrices (N, rows, cols), in `kind`, each
/// normalised by its own Frobenius norm (computed on the cast matrix, as the seed does).
pub fn newton_schulz(g: &Tensor, steps: i64, kind: Kind) -> Tensor {
    let (a, b, c) = NS_COEFFS;
    let mut x = g.to_kind(kind);
    let norm = x.norm_scalaropt_dim(2.0, [-2i64, -1].as_slice(), true);
    x = &x / (norm + NS_EPS);
    let size = g.size();
    let transposed = size[size.len() - 2] > size[size.len() - 1];
    if transposed {
        x = x.transpose(-2, -1);
    }
    for _ in 0..steps {
        let am = x.matmul(&x.transpose(-2, -1));
        let bm = am.matmul(&x);
        // The seed's `a*X + b*B + c*A@B` evaluates `(c*A) @ B`.
        x = &x * a + &bm * b + (&am * c).matmul(&bm);
    }
    if transposed {
        x = x.transpose(-2, -1);
    }
    x
}

pub struct Muon {
    pub cfg: MuonConfig,
    /// The dtype Newton-Schulz runs in (bf16 on CUDA, fp32 on the CPU).
    pub ns_kind: Kind,
    /// Momentum buffers, one per parameter, in the order of `step`'s parameters.
    pub momentum: Vec<Tensor>,
}

/// A matrix to orthogonalise: which parameter, which rows of it.
struct Part {
    param: usize,
    /// The matrix's number among all of a step's, in parameter order (its process in a
    /// sharded step is `index mod world`).
    index: usize,
    row0: i64,
    rows: i64,
    scale: f64,
}

impl Muon {
    pub fn new(cfg: &MuonConfig, params: &[&Tensor], ns_kind: Kind) -> Muon {
        Muon {
            cfg: cfg.clone(),
            ns_kind,
            momentum: params.iter().map(|p| p.zeros_like()).collect(),
        }
    }

    /// One update of every parameter from its gradient, with lr times `lr_factor`.
    pub fn step(&mut self, params: &[&Tensor], lr_factor: f64) {
        self.step_on(params, lr_factor, &World::single())
            .expect("one process has no collective to fail");
    }

    /// [`Muon::step`] in every process of `world`, whose gradients are already summed: each
    /// process keeps every momentum buffer (so rank 0 checkpoints them all), but
    /// orthogonalises only the matrices `i` with `i mod world = rank` (the seed's sharding);
    /// the orthogonalised matrices are then all-reduced and every process applies them.
    pub fn step_on(&mut self, params: &[&Tensor], lr_factor: f64, world: &World) -> Result<()> {
        assert_eq!(
            params.len(),
            self.momentum.len(),
            "Muon was built for other parameters"
        );
        let lr = self.cfg.lr * lr_factor;
        tch::no_grad(|| {
            let groups = self.momentum_parts(params);
            if world.size == 1 {
                for (_, items) in groups {
                    let stacked =
                        Tensor::stack(&items.iter().map(|(_, g)| g).collect::<Vec<_>>(), 0);
                    let ortho = newton_schulz(&stacked, self.cfg.ns_steps, self.ns_kind);
                    // Each part's update added straight into its rows: `p += (-lr·s)·X`, the
                    // same two roundings as building the whole update first.
                    for (j, (part, _)) in items.iter().enumerate() {
                        let x = ortho.get(j as i64).to_kind(Kind::Float) * (-lr * part.scale);
                        let _ = params[part.param]
                            .narrow(0, part.row0, part.rows)
                            .g_add_(&x);
                    }
                }
                return Ok(());
            }
            self.sharded_update(params, groups, lr, world)
        })
    }

    /// Momentum (and Nesterov) for every parameter with a gradient; the matrices to
    /// orthogonalise, grouped by shape, each numbered in parameter order.
    fn momentum_parts(&mut self, params: &[&Tensor]) -> BTreeMap<(i64, i64), Vec<(Part, Tensor)>> {
        let mu = self.cfg.momentum;
        let mut groups: BTreeMap<(i64, i64), Vec<(Part, Tensor)>> = BTreeMap::new();
        let mut index = 0;
        for (i, p) in params.iter().enumerate() {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let buf = &mut self.momentum[i];
            let _ = buf.g_mul_scalar_(mu);
            let _ = buf.g_add_(&g);
            let g = if self.cfg.nesterov {
                &g + &*buf * mu
            } else {
                buf.shallow_clone()
            };
            let (rows, cols) = (g.size()[0], g.size()[1]);
            let split = rows == 3 * cols;
            let (n, part_rows) = if split { (3, cols) } else { (1, rows) };
            let scale = if split {
                (cols as f64).sqrt()
            } else {
                (rows.max(cols) as f64).sqrt()
            };
            for k in 0..n {
                let part = Part {
                    param: i,
                    index,
                    row0: k * part_rows,
                    rows: part_rows,
                    scale,
                };
                index += 1;
                let m = if split {
                    g.narrow(0, k * cols, cols)
                } else {
                    g.shallow_clone()
                };
                groups.entry((part_rows, cols)).or_default().push((part, m));
            }
        }
        groups
    }

    /// This process's share of Newton-Schulz into a flat buffer (zeros elsewhere), summed
    /// over the processes (adding zeros is exact), then applied as [`Muon::step`] does.
    fn sharded_update(
        &self,
        params: &[&Tensor],
        groups: BTreeMap<(i64, i64), Vec<(Part, Tensor)>>,
        lr: f64,
        world: &World,
    ) -> Result<()> {
        let numel = |p: &Part, g: &Tensor| p.rows * g.size()[1];
        let mut offsets = BTreeMap::new();
        let mut parts: Vec<(&Part, i64)> = groups
            .values()
            .flatten()
            .map(|(p, g)| (p, numel(p, g)))
            .collect();
        parts.sort_by_key(|(p, _)| p.index);
        let mut total = 0;
        for (p, n) in &parts {
            offsets.insert(p.index, total);
            total += n;
        }
        let Some(device) = params.first().map(|p| p.device()) else {
            return Ok(());
        };
        let flat = Tensor::zeros([total], (self.ns_kind, device));
        let mine = |p: &Part| p.index % world.size == world.rank;
        for items in groups.values() {
            let own: Vec<&(Part, Tensor)> = items.iter().filter(|(p, _)| mine(p)).collect();
            if own.is_empty() {
                continue;
            }
            let stacked = Tensor::stack(&own.iter().map(|(_, g)| g).collect::<Vec<_>>(), 0);
            let ortho = newton_schulz(&stacked, self.cfg.ns_steps, self.ns_kind);
            for (j, (p, g)) in own.iter().enumerate() {
                flat.narrow(0, offsets[&p.index], numel(p, g))
                    .copy_(&ortho.get(j as i64).reshape([-1]));
            }
        }
        world.all_reduce(&[&flat], ReduceOp::Sum)?;
        for (p, g) in groups.values().flatten() {
            let cols = g.size()[1];
            let x = flat
                .narrow(0, offsets[&p.index], numel(p, g))
                .view([p.rows, cols])
                .to_kind(Kind::Float)
                * (-lr * p.scale);
            let _ = params[p.param].narrow(0, p.row0, p.rows).g_add_(&x);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mat = Vec<Vec<f64>>;

    fn matmul(a: &Mat, b: &Mat) -> Mat {
        let (n, k, m) = (a.len(), b.len(), b[0].len());
        let mut out = vec![vec![0.0; m]; n];
        for i in 0..n {
            for j in 0..m {
                out[i][j] = (0..k).map(|t| a[i][t] * b[t][j]).sum();
            }
        }
        out
    }

    fn transpose(a: &Mat) -> Mat {
        (0..a[0].len())
            .map(|j| a.iter().map(|r| r[j]).collect())
            .collect()
    }

    /// The seed's Newton-Schulz written out on plain f64 matrices.
    fn ns_direct(g: &Mat, steps: usize) -> Mat {
        let norm = g.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
        let mut x: Mat = g
            .iter()
            .map(|r| r.iter().map(|v| v / (norm + 1e-7)).collect())
            .collect();
        let t = g.len() > g[0].len();
        if t {
            x = transpose(&x);
        }
        for _ in 0..steps {
            let a = matmul(&x, &transpose(&x));
            let b = matmul(&a, &x);
            let ab = matmul(&a, &b);
            for i in 0..x.len() {
                for j in 0..x[0].len() {
                    x[i][j] = 3.4445 * x[i][j] - 4.7750 * b[i][j] + 2.0315 * ab[i][j];
                }
            }
        }
        if t {
            x = transpose(&x);
        }
        x
    }

    fn fixed(rows: usize, cols: usize, seed: u64) -> Mat {
        // A deterministic, well-spread matrix without an RNG dependency.
        (0..rows)
            .map(|i| {
                (0..cols)
                    .map(|j| {
                        (((i * 31 + j * 17) as u64 * 2654435761 + seed) % 1000) as f64 / 500.0 - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    fn to_tensor(m: &Mat) -> Tensor {
        let flat: Vec<f32> = m.iter().flatten().map(|&v| v as f32).collect();
        Tensor::from_slice(&flat).view([m.len() as i64, m[0].len() as i64])
    }

    fn to_mat(t: &Tensor) -> Mat {
        let (r, c) = t.size2().unwrap();
        let flat = Vec::<f32>::try_from(&t.detach().contiguous().view([-1])).unwrap();
        (0..r as usize)
            .map(|i| {
                (0..c as usize)
                    .map(|j| flat[i * c as usize + j] as f64)
                    .collect()
            })
            .collect()
    }

    /// Sets `p.grad = g` by differentiating sum(p * g).
    fn set_grad(p: &Tensor, g: &Mat) {
        let mut pp = p.shallow_clone();
        pp.zero_grad();
        (p * to_tensor(g)).sum(Kind::Float).backward();
    }

    fn assert_close(a: &Mat, b: &Mat, tol: f64) {
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.iter().zip(rb) {
                assert!((x - y).abs() <= tol, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn update_equals_the_formula_computed_directly() {
        let c = 8;
        let cfg = MuonConfig {
            lr: 0.02,
            momentum: 0.95,
            nesterov: true,
            ns_steps: 5,
        };
        // A qkv-shaped matrix (3C x C), an MLP input (4C x C, rows > cols) and output (C x 4C).
        let shapes = [(3 * c, c), (4 * c, c), (c, 4 * c)];
        let p0: Vec<Mat> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(r, k))| fixed(r, k, i as u64))
            .collect();
        let params: Vec<Tensor> = p0
            .iter()
            .map(|m| to_tensor(m).set_requires_grad(true))
            .collect();
        let refs: Vec<&Tensor> = params.iter().collect();
        let mut muon = Muon::new(&cfg, &refs, Kind::Float);
        let mut want = p0.clone();
        let mut bufs: Vec<Mat> = shapes.iter().map(|&(r, k)| vec![vec![0.0; k]; r]).collect();
        for step in 0..2 {
            let factor = if step == 0 { 1.0 } else { 0.5 };
            for (i, p) in params.iter().enumerate() {
                let g = fixed(shapes[i].0, shapes[i].1, 100 + step * 10 + i as u64);
                set_grad(p, &g);
                // buf = 0.95 buf + g; g = g + 0.95 buf
                let mut gn = g.clone();
                for r in 0..g.len() {
                    for k in 0..g[0].len() {
                        bufs[i][r][k] = 0.95 * bufs[i][r][k] + g[r][k];
                        gn[r][k] = g[r][k] + 0.95 * bufs[i][r][k];
                    }
                }
                let (rows, cols) = shapes[i];
                let (x, scale): (Mat, f64) = if rows == 3 * cols {
                    let mut x = Vec::new();
                    for part in gn.chunks(cols) {
                        x.extend(ns_direct(&part.to_vec(), 5));
                    }
                    (x, (cols as f64).sqrt())
                } else {
                    (ns_direct(&gn, 5), (rows.max(cols) as f64).sqrt())
                };
                for r in 0..rows {
                    for k in 0..cols {
                        want[i][r][k] -= cfg.lr * factor * scale * x[r][k];
                    }
                }
            }
            muon.step(&refs, factor);
            for (i, p) in params.iter().enumerate() {
                assert_close(&to_mat(p), &want[i], 2e-5);
            }
        }
    }

    #[test]
    fn batched_newton_schulz_equals_one_at_a_time() {
        let a = to_tensor(&fixed(6, 4, 1));
        let b = to_tensor(&fixed(6, 4, 2));
        let both = newton_schulz(&Tensor::stack(&[&a, &b], 0), 5, Kind::Float);
        let one = newton_schulz(&a.unsqueeze(0), 5, Kind::Float);
        assert!(both.get(0).allclose(&one.get(0), 1e-6, 1e-6, false));
        assert_close(&to_mat(&both.get(1)), &ns_direct(&fixed(6, 4, 2), 5), 1e-5);
    }

    /// Newton-Schulz in bf16 (what CUDA training runs) against fp32, on the CPU with small
    /// matrices: the same orthogonalisation within bf16 rounding.
    #[test]
    fn bf16_newton_schulz_agrees_with_fp32_within_bf16_rounding() {
        let g = Tensor::stack(
            &[
                to_tensor(&fixed(24, 8, 3)),
                to_tensor(&fixed(24, 8, 4)),
                to_tensor(&fixed(24, 8, 5)),
            ],
            0,
        );
        for input in [g.shallow_clone(), g.transpose(-2, -1).contiguous()] {
            let fp32 = newton_schulz(&input, 5, Kind::Float);
            let bf16 = newton_schulz(&input, 5, Kind::BFloat16);
            assert_eq!(bf16.kind(), Kind::BFloat16);
            let bf16 = bf16.to_kind(Kind::Float);
            let err = (&bf16 - &fp32).norm().double_value(&[]) / fp32.norm().double_value(&[]);
            // The seed's own Newton-Schulz in PyTorch differs between bf16 and fp32 by about
            // 3 % (Frobenius) on such matrices: the quintic amplifies bf16's 2^-8 rounding.
            assert!(err <= 0.06, "bf16 vs fp32: relative error {err}");
            assert!(err > 0.0, "the bf16 path ran in fp32");
        }
    }
}
