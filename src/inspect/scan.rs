//! `inspect --scan`: for a lower model A and an upper model B, every stack
//! `A[0, i) + B[j, L_B)` (exit point `i` of A, 1..=L_A; entry point `j` of B, 0..L_B): what
//! A gives at its point `i` against what B expects at its point `j` (RMS ratio, cosine,
//! debiased CKA, the angular distance of Gromov et al. 2024), and the probe loss of that
//! stack as it is and with a least-squares map fitted on train tokens in place of the
//! boundary norm. One activation pass per model and batch; only B's blocks `j..L_B` run per
//! cell. The README's "Inspect" section states every definition.

use std::f64::consts::PI;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::collect::rows_without_pos0;
use super::input::{InspectInput, InspectOptions, C};
use super::report::{ScanBest, ScanCell, ScanFlags, ScanReport};
use super::seam::cka_over;
use super::stitch::{Affine, LeastSquares};
use crate::config::NormKind;
use crate::model::{apply_norm, Gpt, Ropes};
use crate::progress::Sink;
use crate::stack::spec::{flags_of, BlockRange};

type Batches = [(Tensor, Tensor)];

/// Refuses a scan of anything but two parts (the lower model and the upper one).
pub fn check_parts(parts: usize) -> Result<()> {
    if parts != 2 {
        bail!(
            "--scan compares two models, the lower A and the upper B (--models A B): got {parts} parts"
        );
    }
    Ok(())
}

/// The two models as every scanned stack runs them: A with the stack's `norm_wte`, B's
/// blocks, the stack's `W` (the first part's) and `norm_lm_head`, and the boundary norm.
struct Pair<'a> {
    lower: Gpt,
    upper: &'a Gpt,
    head: &'a Gpt,
    norm_inter_model: NormKind,
}

impl Pair<'_> {
    fn exits(&self) -> usize {
        self.lower.blocks.len()
    }
    fn entries(&self) -> usize {
        self.upper.blocks.len()
    }

    /// The norm a stack puts before B's block `entry` (as `stack::assemble` does).
    fn seam_norm(&self, entry: usize) -> NormKind {
        match self.norm_inter_model {
            NormKind::None => self.upper.blocks[entry].pre_norm,
            n => n,
        }
    }

    /// The probe loss of B's blocks `entry..` run on `x` (already through the boundary norm
    /// or a map), then the final norm and the head.
    fn loss_from(&self, x: &Tensor, entry: usize, y: &Tensor) -> f64 {
        let mut ropes = Ropes::new(x.size()[1], x.device());
        let blocks = &self.upper.blocks[entry..];
        let mut h = blocks[0].forward_body(x, ropes.for_block(&blocks[0]), C);
        for b in &blocks[1..] {
            h = b.forward(&h, ropes.for_block(b), C);
        }
        let h = apply_norm(&h, self.head.cfg.norm_lm_head);
        self.head.lm_loss(&h, y, C, false).loss.double_value(&[])
    }
}

/// Per exit point of A, the least-squares map from A's raw point to every point of B at
/// once (B's points side by side, so one `[X 1]ᵀ [X 1]` serves every entry), fitted on the
/// train tokens with position 0 left out; and the tokens it was fitted on.
fn fit_maps(pair: &Pair, fit: &Batches, dev: tch::Device) -> Result<(Vec<Affine>, usize)> {
    let c = pair.head.cfg.n_embd;
    let nb = pair.entries() as i64;
    let mut ls: Vec<LeastSquares> = (0..pair.exits())
        .map(|_| LeastSquares::new(c, nb * c, dev))
        .collect();
    tch::no_grad(|| {
        for (x, _) in fit {
            let x = x.to_device(dev);
            let pa = pair.lower.points(&x, C);
            let pb = pair.upper.points(&x, C);
            let want: Vec<Tensor> = pb[..pair.entries()].iter().map(rows_without_pos0).collect();
            let want = Tensor::cat(&want, 1);
            for (i, l) in ls.iter_mut().enumerate() {
                l.add(&rows_without_pos0(&pa[i + 1]), &want);
            }
        }
    });
    let tokens = ls.first().map(|l| l.tokens).unwrap_or(0);
    let maps = ls.iter().map(LeastSquares::solve).collect::<Result<_>>()?;
    Ok((maps, tokens))
}

/// The map of exit `i`'s fit that lands on B's point `entry`.
fn map_to(m: &Affine, entry: usize, c: i64) -> Affine {
    Affine {
        a: m.a.narrow(1, entry as i64 * c, c),
        b: m.b.narrow(0, entry as i64 * c, c),
    }
}

/// The probe, one pass of each model per batch: A's rows at every exit point and B's at
/// every entry point (position 0 left out), and every cell's loss as is and stitched (token-weighted means).
struct ProbePass {
    lower_rows: Vec<Vec<Tensor>>,
    upper_rows: Vec<Vec<Tensor>>,
    loss: Vec<Vec<f64>>,
    stitched: Vec<Vec<f64>>,
}

fn probe_pass(
    pair: &Pair,
    probe: &Batches,
    maps: &[Affine],
    dev: tch::Device,
    progress: &mut dyn Sink,
) -> ProbePass {
    let (na, nb) = (pair.exits(), pair.entries());
    let c = pair.head.cfg.n_embd;
    let mut out = ProbePass {
        lower_rows: (0..na).map(|_| Vec::new()).collect(),
        upper_rows: (0..nb).map(|_| Vec::new()).collect(),
        loss: vec![vec![0.0; nb]; na],
        stitched: vec![vec![0.0; nb]; na],
    };
    let total: i64 = probe.iter().map(|(x, _)| x.numel() as i64).sum();
    let mut done = 0;
    tch::no_grad(|| {
        for (x, y) in probe {
            let (x, y) = (x.to_device(dev), y.to_device(dev));
            let pa = pair.lower.points(&x, C);
            let pb = pair.upper.points(&x, C);
            for (i, p) in pa[1..].iter().enumerate() {
                out.lower_rows[i].push(rows_without_pos0(p));
            }
            for (j, p) in pb[..nb].iter().enumerate() {
                out.upper_rows[j].push(rows_without_pos0(p));
            }
            let k = y.numel() as f64;
            for i in 0..na {
                let raw = &pa[i + 1];
                for j in 0..nb {
                    let arrives = apply_norm(raw, pair.seam_norm(j));
                    out.loss[i][j] += pair.loss_from(&arrives, j, &y) * k;
                    let mapped = map_to(&maps[i], j, c).apply(raw);
                    out.stitched[i][j] += pair.loss_from(&mapped, j, &y) * k;
                }
            }
            done += x.numel() as i64;
            progress.update("scan", done, total);
        }
    });
    progress.finish();
    for v in out.loss.iter_mut().chain(out.stitched.iter_mut()) {
        for l in v.iter_mut() {
            *l /= total.max(1) as f64;
        }
    }
    out
}

/// What arrives (A's rows after the boundary norm) against what B expects (its own rows):
/// RMS ratio, mean cosine, debiased CKA, mean angular distance.
fn measures(arrives: &[Tensor], expected: &[Tensor]) -> (f64, f64, f64, f64) {
    let (mut rms_a, mut rms_e, mut cos, mut ang, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let sum = |t: Tensor| t.sum(Kind::Double).double_value(&[]);
    let rms = |t: &Tensor| {
        t.pow_tensor_scalar(2)
            .mean_dim(-1, false, Kind::Double)
            .sqrt()
    };
    for (a, e) in arrives.iter().zip(expected) {
        let (a64, e64) = (a.to_kind(Kind::Double), e.to_kind(Kind::Double));
        let c = Tensor::cosine_similarity(&a64, &e64, 1, 1e-12).clamp(-1.0, 1.0);
        rms_a += sum(rms(&a64));
        rms_e += sum(rms(&e64));
        ang += sum(c.acos() / PI);
        cos += sum(c);
        n += a.size()[0] as f64;
    }
    let cka = cka_over(arrives, expected).debiased();
    (rms_a / rms_e, cos / n, cka, ang / n)
}

/// The lowest cell by `loss` (finite values first; ties to the first in row-major order).
fn best_by(cells: &[ScanCell], loss: impl Fn(&ScanCell) -> f64, depths: [i64; 2]) -> ScanBest {
    let cell = cells
        .iter()
        .filter(|c| loss(c).is_finite())
        .min_by(|a, b| loss(a).total_cmp(&loss(b)))
        .unwrap_or(&cells[0]);
    let ranges = [
        BlockRange::new(0, cell.exit as i64),
        BlockRange::new(cell.entry as i64, depths[1]),
    ];
    ScanBest {
        exit: cell.exit,
        entry: cell.entry,
        loss: loss(cell),
        ranges: format!("0:{},{}:{}", cell.exit, cell.entry, depths[1]),
        flags: flags_of(&ranges, &depths).map(|(f, l)| ScanFlags {
            use_first_layer: f,
            use_last_layer: l,
        }),
    }
}

/// Scans every cut of the stack's two models on the probe, the stitches fitted on `fit`
/// (train tokens, never the probe).
pub(super) fn scan(
    input: &InspectInput,
    fit: &Batches,
    probe: &Batches,
    opts: &InspectOptions,
    progress: &mut dyn Sink,
) -> Result<ScanReport> {
    check_parts(input.parts.len())?;
    let (a, b) = (&input.parts[0], &input.parts[1]);
    let mut lower = a.model.shallow_clone();
    lower.cfg.norm_wte = input.stack.cfg.norm_wte;
    let pair = Pair {
        lower,
        upper: &b.model,
        head: &input.stack,
        norm_inter_model: input.norm_inter_model,
    };
    let (na, nb) = (pair.exits(), pair.entries());
    if na == 0 || nb == 0 {
        bail!(
            "--scan: {} has {na} blocks and {} has {nb}: each needs at least one",
            a.label,
            b.label
        );
    }
    let (maps, fit_tokens) = fit_maps(&pair, fit, opts.device)?;
    let pass = probe_pass(&pair, probe, &maps, opts.device, progress);
    let mut cells = Vec::with_capacity(na * nb);
    for i in 1..=na {
        for j in 0..nb {
            let arrives: Vec<Tensor> = tch::no_grad(|| {
                pass.lower_rows[i - 1]
                    .iter()
                    .map(|r| apply_norm(r, pair.seam_norm(j)))
                    .collect()
            });
            let (rms_ratio, cos, cka_debiased, angular_distance) =
                tch::no_grad(|| measures(&arrives, &pass.upper_rows[j]));
            cells.push(ScanCell {
                exit: i,
                entry: j,
                rms_ratio,
                cos,
                cka_debiased,
                angular_distance,
                loss: pass.loss[i - 1][j],
                loss_stitched: pass.stitched[i - 1][j],
            });
        }
    }
    let depths = [na as i64, nb as i64];
    Ok(ScanReport {
        lower: a.label.clone(),
        upper: b.label.clone(),
        lower_blocks: na,
        upper_blocks: nb,
        default_cut: (na >= 2 && nb >= 2).then_some([na - 1, 1]),
        fit_tokens,
        n_tokens: pass.upper_rows[0]
            .iter()
            .map(|t| t.size()[0] as usize)
            .sum(),
        best: best_by(&cells, |c| c.loss, depths),
        best_stitched: best_by(&cells, |c| c.loss_stitched, depths),
        cells,
    })
}
