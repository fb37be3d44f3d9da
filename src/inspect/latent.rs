//! The seed's latent metrics: each part's activations at its input, first and last blocks
//! and output, their statistics and their pairwise cosines.

use tch::{Kind, Tensor};

use super::input::{InspectInput, C};
use super::report::{ActivationStats, LatentReport};
use crate::model::apply_norm;

fn stats(t: &Tensor) -> ActivationStats {
    let t = t.to_kind(Kind::Double);
    ActivationStats {
        mean: t.mean(Kind::Double).double_value(&[]),
        std: t.std(true).double_value(&[]),
        min: t.min().double_value(&[]),
        max: t.max().double_value(&[]),
    }
}

/// The seed's latent metrics on (up to) the first 1,024 probe tokens.
pub(super) fn latent(input: &InspectInput, x: &Tensor) -> LatentReport {
    let (b, t) = (x.size()[0], x.size()[1]);
    let rows = (1024 / t).clamp(1, b);
    let x = x.narrow(0, 0, rows);
    let mut acts: Vec<(String, Vec<(&'static str, Tensor)>)> = Vec::new();
    for p in &input.parts {
        let m = &p.model;
        let pts = m.points(&x, C);
        let l = pts.len() - 1;
        let c = m.cfg.n_embd;
        let flat = |t: &Tensor| t.reshape([-1, c]);
        let head = |t: &Tensor| flat(&apply_norm(t, m.cfg.norm_lm_head));
        acts.push((
            p.label.clone(),
            vec![
                ("in", flat(&pts[0])),
                ("first", flat(&pts[1])),
                ("last", head(&pts[l - 1])),
                ("out", head(&pts[l])),
            ],
        ));
    }
    let mut rep = LatentReport {
        tokens: (rows * t) as usize,
        ..Default::default()
    };
    for (label, a) in &acts {
        rep.stats.insert(
            label.clone(),
            a.iter().map(|(k, v)| (k.to_string(), stats(v))).collect(),
        );
    }
    let cos = |a: &Tensor, b: &Tensor| {
        Tensor::cosine_similarity(a, b, 1, 1e-8)
            .mean(Kind::Double)
            .double_value(&[])
    };
    for (i, (la, a)) in acts.iter().enumerate() {
        for (j, (lb, b)) in acts.iter().enumerate().skip(i) {
            for (ka, va) in a {
                for (kb, vb) in b {
                    if i == j && ka >= kb {
                        continue;
                    }
                    rep.cosine
                        .insert(format!("{la}.{ka}~{lb}.{kb}"), cos(va, vb));
                }
            }
        }
    }
    rep
}
