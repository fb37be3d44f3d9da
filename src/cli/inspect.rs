//! `stacklab inspect`: the stack `stack` would score (same flags), and each part alone, run
//! on the same probe tokens (`inspect::inspect_stack`); the report printed as text or JSON
//! (`stacklab.inspect/1`), and the figures written (with `--scan`, every cut of two models).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::selection::StackSelectionArgs;
use crate::inspect::attribution::ParentShare;
use crate::inspect::report::{InspectReport, ScanBest, ScanCell, ScanReport};
use crate::inspect::run::block_list;
use crate::inspect::stack::{inspect_stack, SeamOptions};
use crate::stack::selection::prepare;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub sel: StackSelectionArgs,
    /// Write the figures (norm heat map with the seam marked, RMS and logit lens per layer,
    /// CKA matrices) as SVG files into DIR.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Also train each seam's affine stitch for STEPS Adam steps on the language-modelling
    /// loss, from the least-squares fit (0: least squares only).
    #[arg(long, value_name = "STEPS", default_value_t = 0)]
    pub stitch: i64,
    /// Learning rate of the trained stitch.
    #[arg(long, default_value_t = 1e-3)]
    pub stitch_lr: f64,
    /// Bins of the residual-norm histograms (shared log10 edges).
    #[arg(long, default_value_t = 40)]
    pub hist_bins: usize,
    /// Also scan every cut of the two models: for each exit point i of the lower model and
    /// entry point j of the upper, the stack 0:i,j:L as is and stitched (exactly two models).
    #[arg(long)]
    pub scan: bool,
    /// One JSON object (schema stacklab.inspect/1) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

/// The part whose own prediction the lens is closest to at a point (by KL), as a column.
fn follows(shares: &[ParentShare]) -> String {
    shares
        .iter()
        .min_by(|a, b| a.kl.total_cmp(&b.kl))
        .map(|a| format!("  {} ({:.4}, {:.3})", a.model, a.kl, a.top1_agree))
        .unwrap_or_default()
}

/// The flags that build a scanned cut, or its `--ranges`.
fn how_built(b: &ScanBest) -> String {
    let flags = match b.flags {
        Some(f) if !f.use_first_layer && !f.use_last_layer => " (the seed's defaults: no flags)",
        Some(f) if f.use_first_layer && f.use_last_layer => {
            " (= --use-first-layer --use-last-layer)"
        }
        Some(f) if f.use_first_layer => " (= --use-first-layer)",
        Some(_) => " (= --use-last-layer)",
        None => "",
    };
    format!("--ranges {}{flags}", b.ranges)
}

/// One scanned value as a table: exit i down, entry j across; `*` marks `best`, brackets the
/// seed's default cut.
fn scan_table(
    s: &ScanReport,
    title: &str,
    best: &ScanBest,
    v: impl Fn(&ScanCell) -> f64,
) -> String {
    let mut out = format!("\n{title}\n  exit\\entry");
    for j in 0..s.upper_blocks {
        out.push_str(&format!(" {:>9}", format!("j={j}")));
    }
    for i in 1..=s.lower_blocks {
        out.push_str(&format!("\n  i={i:<9}"));
        for c in s.cells.iter().filter(|c| c.exit == i) {
            let mark = if (c.exit, c.entry) == (best.exit, best.entry) {
                '*'
            } else {
                ' '
            };
            let cell = if s.default_cut == Some([c.exit, c.entry]) {
                format!("[{:.4}]", v(c))
            } else {
                format!("{:.4}", v(c))
            };
            out.push_str(&format!(" {cell:>8}{mark}"));
        }
    }
    out.push('\n');
    out
}

fn scan_text(s: &ScanReport) -> String {
    let mut out = format!(
        "\nscan: {}[0, i) + {}[j, {}), i = 1..={}, j = 0..{} (* best, [ ] the seed's default cut); measures over {} probe tokens, stitches fitted on {} train tokens\n",
        s.lower, s.upper, s.upper_blocks, s.lower_blocks, s.upper_blocks, s.n_tokens, s.fit_tokens
    );
    out.push_str(&scan_table(s, "loss (as is)", &s.best, |c| c.loss));
    out.push_str(&scan_table(
        s,
        "loss (least-squares stitch)",
        &s.best_stitched,
        |c| c.loss_stitched,
    ));
    out.push_str(&scan_table(s, "debiased CKA", &s.best, |c| c.cka_debiased));
    out.push_str(&scan_table(
        s,
        "angular distance arccos(cos)/pi",
        &s.best,
        |c| c.angular_distance,
    ));
    out.push_str(&scan_table(s, "rms ratio", &s.best, |c| c.rms_ratio));
    for (name, b) in [("best", &s.best), ("best stitched", &s.best_stitched)] {
        out.push_str(&format!(
            "{name:<15} exit {}, entry {}: loss {:.6}  {}\n",
            b.exit,
            b.entry,
            b.loss,
            how_built(b)
        ));
    }
    out
}

/// The table of points: RMS, update, the lens, and which part the lens follows.
fn points_text(r: &InspectReport) -> String {
    let mut s = String::new();
    s.push_str("\npoint  block    rms p50   p05..p95         update  lens loss  KL       top1   p(input)  follows (KL, top1)\n");
    for p in &r.points {
        let block = p
            .block
            .map(|b| format!("{}:{b}", p.model))
            .unwrap_or_else(|| "embed".into());
        s.push_str(&format!(
            "{:>5}  {:<8} {:>9.4} {:>8.3}..{:<8.3} {:>6} {:>9.4} {:>8.4} {:>6.3} {:>9.4}\n",
            p.r,
            block,
            p.rms.p50,
            p.rms.p05,
            p.rms.p95,
            p.update_ratio
                .map(|u| format!("{u:.3}"))
                .unwrap_or_else(|| "-".into()),
            p.lens.loss,
            p.lens.kl_to_final,
            p.lens.top1_agree,
            p.lens.p_input_token
        ));
        s.pop();
        s.push_str(&follows(&p.attribution));
        s.push('\n');
        if r.seams.iter().any(|x| x.after_block == p.r) {
            s.push_str("  ---- seam ----\n");
        }
    }
    s
}

/// Each seam: what arrives against what is expected, CKA, and the stitches.
fn seams_text(r: &InspectReport) -> String {
    let mut s = String::new();
    for seam in &r.seams {
        let st = &seam.stitch;
        s.push_str(&format!(
            "\nseam after block {} ({} -> {} at its block {})\n  rms received {:.4} vs expected {:.4}: ratio {:.3}\n  cosine to expected: mean {:.3} (p05 {:.3}, p50 {:.3})\n  CKA {:.3} (debiased {:.3}, {} tokens); best match: {} point {}\n  stitch loss: none {:.4}, identity {:.4}, least squares {:.4}{}; {} alone {:.4}; penalty {:+.4} ({} map, chosen on {} held-out train tokens)\n  fitted on {} train tokens: identity {:.4}, least squares {:.4}{}\n",
            seam.after_block,
            seam.lower,
            seam.upper,
            seam.upper_start,
            seam.rms_received,
            seam.rms_expected,
            seam.rms_ratio,
            seam.cos_to_expected,
            seam.cos_to_expected_p05,
            seam.cos_to_expected_p50,
            seam.cka,
            seam.cka_debiased,
            seam.cka_n_tokens,
            seam.upper,
            seam.best_match_point,
            st.none,
            st.identity,
            st.lstsq,
            st.trained
                .map(|t| format!(", trained ({} steps) {t:.4}", st.trained_steps))
                .unwrap_or_default(),
            seam.upper,
            st.upper_model,
            st.penalty,
            st.chosen,
            st.heldout_tokens,
            st.fit_tokens,
            st.fit.identity,
            st.fit.lstsq,
            st.fit
                .trained
                .map(|t| format!(", trained {t:.4}"))
                .unwrap_or_default()
        ));
    }
    s
}

fn text(r: &InspectReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "stack           {}  ({} blocks)\nnorms           norm_wte {}, norm_lm_head {}, norm_inter_model {}\nprobe           {} tokens (seq_len {})\nval_loss stack  {:.6}\n",
        block_list(r),
        r.blocks.len(),
        r.norm_wte,
        r.norm_lm_head,
        r.norm_inter_model,
        r.tokens,
        r.seq_len,
        r.val_loss_stack
    ));
    for p in &r.parts {
        s.push_str(&format!(
            "  {} alone      {:.6}  ({}, blocks {}..{} used, trained norms {}/{})\n",
            p.model, p.val_loss, p.path, p.range[0], p.range[1], p.norm_wte, p.norm_lm_head
        ));
    }
    s.push_str(&points_text(r));
    s.push_str(&seams_text(r));
    if let Some(scan) = &r.scan {
        s.push_str(&scan_text(scan));
    }
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

pub fn run(a: InspectArgs) -> Result<()> {
    let device = a.sel.device.resolve()?;
    let (spec, eval) = (a.sel.spec()?, a.sel.eval()?);
    let opts = SeamOptions {
        stitch: a.stitch,
        stitch_lr: a.stitch_lr,
        hist_bins: a.hist_bins,
        scan: a.scan,
    };
    opts.check()?;
    if a.scan {
        crate::inspect::scan::check_parts(spec.models.len())?;
    }
    let p = prepare(&spec, &eval, device)?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    let mut progress = crate::progress::for_command();
    let report = inspect_stack(&p, &eval, &opts, device, progress.as_mut())?;
    let mut figures = match &a.plot {
        Some(dir) => crate::inspect::plot::write_figures(&report, dir)?,
        None => Vec::new(),
    };
    if let (Some(dir), Some(scan)) = (&a.plot, &report.scan) {
        figures.extend(crate::inspect::plot_scan::write_scan_figures(scan, dir)?);
    }
    if a.json {
        for f in &figures {
            eprintln!("wrote {}", f.display());
        }
        let mut v = serde_json::to_value(&report)?;
        v["figures"] = serde_json::json!(figures
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>());
        v["warnings"] = serde_json::json!(p.warnings);
        println!("{v}");
    } else {
        print!("{}", text(&report));
        for f in &figures {
            println!("figure          {}", f.display());
        }
    }
    Ok(())
}
