//! `inspect` on stacks whose answer is known: a model split into two parts of itself
//! (`A[0,k) + A[k,L)`) is the model, so every point, the seam and its stitch must say so.

mod common;

use common::fixtures;
use stacklab::config::NormKind;
use stacklab::data::ShardLoader;
use stacklab::inspect::{inspect, InspectInput, InspectOptions, PartInput};
use stacklab::model::weights::{load_seed_file, SeedOptions};
use stacklab::model::{Block, Gpt};
use tch::Device;

fn reference_model() -> Gpt {
    stacklab::device::init();
    load_seed_file(
        &fixtures().join("reference_model.safetensors"),
        &SeedOptions {
            n_head: Some(1),
            seq_len: Some(48),
            ..Default::default()
        },
        Device::Cpu,
    )
    .unwrap()
}

fn block_copy(b: &Block, pre_norm: NormKind) -> Block {
    Block {
        pre_norm,
        ..b.shallow_clone()
    }
}

fn self_split(k: usize) -> InspectInput {
    let a = reference_model();
    let l = a.blocks.len();
    let stack = Gpt {
        cfg: a.cfg.clone(),
        wte: a.wte.shallow_clone(),
        blocks: a
            .blocks
            .iter()
            .map(|b| block_copy(b, NormKind::None))
            .collect(),
    };
    let part = |label: &str, s: usize, e: usize| PartInput {
        label: label.into(),
        path: "reference_model.safetensors".into(),
        model: reference_model(),
        start: s as i64,
        end: e as i64,
    };
    InspectInput {
        stack,
        parts: vec![part("m1", 0, k), part("m2", k, l)],
        norm_inter_model: NormKind::None,
    }
}

fn loaders() -> (ShardLoader, ShardLoader) {
    let val = ShardLoader::from_glob(
        &fixtures().join("reference_val.bin").display().to_string(),
        2,
        48,
    )
    .unwrap();
    let train = ShardLoader::from_glob(
        &fixtures()
            .join("reference_train_*.bin")
            .display()
            .to_string(),
        2,
        48,
    )
    .unwrap();
    (val, train)
}

#[test]
fn a_model_split_into_itself_matches_the_model_everywhere() {
    let input = self_split(1);
    let (mut val, mut train) = loaders();
    let opts = InspectOptions {
        tokens: 192,
        batch: 2,
        stitch_steps: 3,
        stitch_lr: 1e-4,
        hist_bins: 16,
        device: Device::Cpu,
    };
    let r = inspect(
        &input,
        &mut val,
        &mut train,
        &opts,
        &mut stacklab::progress::Silent,
    )
    .unwrap();
    assert_eq!(r.schema, "stacklab.inspect/1");
    assert_eq!(r.tokens, 192);
    assert_eq!(r.points.len(), 3);
    // Histogram counts: every probe token but position 0 of each of the 4 sequences.
    for p in r
        .points
        .iter()
        .chain(r.parts.iter().flat_map(|p| p.points.iter()))
    {
        assert_eq!(p.hist.iter().sum::<u64>(), 192 - 4);
        assert_eq!(p.hist.len(), r.hist_edges_log10.len() - 1);
    }
    // Every stack point equals the model alone, point for point.
    for (s, m) in r.points.iter().zip(&r.parts[0].points) {
        assert!((s.rms.mean - m.rms.mean).abs() < 1e-9, "{s:?} vs {m:?}");
        assert!((s.lens.loss - m.lens.loss).abs() < 1e-6);
    }
    // The lens at the last point is the stack's loss, and equals eval of the model.
    let a = reference_model();
    let (x, y) = {
        let mut l = ShardLoader::from_glob(
            &fixtures().join("reference_val.bin").display().to_string(),
            4,
            48,
        )
        .unwrap();
        l.next_batch().unwrap().tensors(Device::Cpu)
    };
    let want = tch::no_grad(|| {
        a.loss(&x, &y, stacklab::model::Compute::Fp32)
            .double_value(&[])
    });
    assert!(
        (r.val_loss_stack - want).abs() < 1e-5 * want,
        "{} vs {want}",
        r.val_loss_stack
    );
    assert!((r.points[2].lens.loss - want).abs() < 1e-5 * want);
    assert!(r.points[2].lens.kl_to_final.abs() < 1e-9);
    // The seam: what arrives is what the upper model expects.
    let seam = &r.seams[0];
    assert_eq!(seam.after_block, 1);
    assert_eq!(seam.upper_start, 1);
    assert!((seam.rms_ratio - 1.0).abs() < 1e-9, "{}", seam.rms_ratio);
    assert!((seam.cka - 1.0).abs() < 1e-9 && (seam.cka_debiased - 1.0).abs() < 1e-9);
    assert!((seam.cos_to_expected - 1.0).abs() < 1e-6);
    assert_eq!(seam.cka_n_tokens, 188);
    assert_eq!(seam.best_match_point, 1);
    assert_eq!(seam.cka_rows, vec![0, 1]);
    assert!((seam.cka_matrix[1][1] - 1.0).abs() < 1e-9);
    // Stitches: the least-squares fit is the identity, so every loss is the model's.
    let st = &seam.stitch;
    for v in [st.none, st.identity, st.lstsq] {
        assert!((v - want).abs() < 1e-4 * want, "{st:?} vs {want}");
    }
    assert!(st.trained.unwrap().is_finite());
    assert!((st.upper_model - want).abs() < 1e-5 * want);
    assert_eq!(st.fit_tokens, 192);
    // The seed's latent metrics, for both models.
    assert_eq!(r.latent.stats.len(), 2);
    assert!(r.latent.stats["m1"].contains_key("out"));
    assert!((r.latent.cosine["m1.out~m2.out"] - 1.0).abs() < 1e-6);

    // The figures parse as XML and draw one series per model (legend entries and lines).
    let dir = tempfile::tempdir().unwrap();
    let files = stacklab::inspect::plot::write_figures(&r, dir.path()).unwrap();
    assert_eq!(files.len(), 5);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{} is not XML: {e}", f.display()));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_string))
            .collect();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        if ["rms.svg", "lens.svg", "lens_kl.svg"].contains(&name.as_str()) {
            for series in ["stack", "m1 alone", "m2 alone"] {
                let n = texts.iter().filter(|t| t.trim() == series).count();
                assert_eq!(n, 1, "{name}: legend entry {series:?} in {texts:?}");
            }
            let lines = doc
                .descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count();
            assert!(lines >= 3, "{name}: {lines} polylines");
        }
        if name == "norm_heatmap.svg" {
            assert!(
                texts.iter().any(|t| t.contains("seam after block 1")),
                "{texts:?}"
            );
        }
    }
}

#[test]
fn the_inspect_command_reports_the_schema_and_agrees_with_stack() {
    let lab = common::Lab::new();
    let base = common::micro_config(8, "");
    let p1 = lab.write("m1.toml", &base);
    lab.ok(&[
        "train",
        "--config",
        p1.to_str().unwrap(),
        "--name",
        "m1",
        "--device",
        "cpu",
    ]);
    let m2 = format!(
        "from_model = \"{}\"\n{}",
        lab.checkpoints().join("m1").display(),
        base.replace("seed = 0", "seed = 1")
    );
    let p2 = lab.write("m2.toml", &m2);
    lab.ok(&[
        "train",
        "--config",
        p2.to_str().unwrap(),
        "--name",
        "m2",
        "--device",
        "cpu",
    ]);
    let (m1, m2) = (lab.checkpoints().join("m1"), lab.checkpoints().join("m2"));
    let plots = lab.path("figures");
    let out = lab.ok(&[
        "inspect",
        "--models",
        m1.to_str().unwrap(),
        m2.to_str().unwrap(),
        "--data",
        "embedded",
        "--tokens",
        "2048",
        "--stitch",
        "4",
        "--plot",
        plots.to_str().unwrap(),
        "--json",
        "--device",
        "cpu",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["schema"], "stacklab.inspect/1");
    assert_eq!(v["tokens"], 2048);
    // m1:0..1 | m2:1..2 of two 2-block models: 2 blocks, 3 points.
    assert_eq!(v["blocks"].as_array().unwrap().len(), 2);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for p in points {
        for k in [
            "r",
            "model",
            "block",
            "rms",
            "rms_pos0",
            "hist",
            "update_ratio",
            "cos_prev",
            "lens",
        ] {
            assert!(p.get(k).is_some(), "point lacks {k}: {p}");
        }
        for k in [
            "mean", "p01", "p05", "p25", "p50", "p75", "p95", "p99", "max",
        ] {
            assert!(p["rms"][k].is_number(), "rms lacks {k}");
        }
        for k in ["loss", "kl_to_final", "top1_agree", "p_input_token"] {
            assert!(p["lens"][k].is_number(), "lens lacks {k}");
        }
    }
    assert_eq!(v["parts"].as_array().unwrap().len(), 2);
    assert_eq!(v["parts"][0]["points"].as_array().unwrap().len(), 3);
    let seam = &v["seams"][0];
    for k in [
        "after_block",
        "rms_received",
        "rms_expected",
        "rms_ratio",
        "cos_to_expected",
        "cka",
        "cka_debiased",
        "cka_n_tokens",
        "cka_matrix",
        "best_match_point",
    ] {
        assert!(seam.get(k).is_some(), "seam lacks {k}: {seam}");
    }
    for k in [
        "none",
        "identity",
        "lstsq",
        "trained",
        "upper_model",
        "penalty",
    ] {
        assert!(seam["stitch"][k].is_number(), "stitch lacks {k}: {seam}");
    }
    assert_eq!(
        seam["upper_start"], 1,
        "m2's first kept block is 1 (use_first_layer off)"
    );
    assert!(v["latent"]["stats"]["m1"]["out"]["std"].is_number());
    assert_eq!(v["figures"].as_array().unwrap().len(), 5);
    // The lens at the last point is the stack's loss on the same tokens.
    let s = lab.ok(&[
        "stack",
        "--models",
        m1.to_str().unwrap(),
        m2.to_str().unwrap(),
        "--data",
        "embedded",
        "--tokens",
        "2048",
        "--json",
        "--device",
        "cpu",
    ]);
    let s: serde_json::Value = serde_json::from_str(s.lines().last().unwrap()).unwrap();
    let want = s["val_loss_stack"].as_f64().unwrap();
    let lens = points[2]["lens"]["loss"].as_f64().unwrap();
    assert!(
        (lens - want).abs() < 1e-5 * want,
        "lens {lens} vs stack {want}"
    );
    assert!((v["val_loss_stack"].as_f64().unwrap() - want).abs() < 1e-5 * want);
    // Part losses alone agree with stack's per-part losses.
    for (i, part) in v["parts"].as_array().unwrap().iter().enumerate() {
        let a = part["val_loss"].as_f64().unwrap();
        let b = s["val_losses"][i].as_f64().unwrap();
        assert!((a - b).abs() < 1e-5 * b, "part {i}: {a} vs {b}");
    }
    // A bad flag is refused by name.
    let e = lab.fails(&[
        "inspect",
        "--models",
        m1.to_str().unwrap(),
        m2.to_str().unwrap(),
        "--stitch=-3",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("--stitch"), "{e}");
}

#[test]
fn a_boundary_norm_is_what_arrives_at_the_seam_and_the_stitch_replaces_it() {
    for norm in [NormKind::RmsNorm, NormKind::LayerNorm] {
        let mut input = self_split(1);
        input.stack.blocks[1].pre_norm = norm;
        input.norm_inter_model = norm;
        let (mut val, mut train) = loaders();
        let opts = InspectOptions {
            tokens: 192,
            batch: 2,
            stitch_steps: 40,
            stitch_lr: 1e-2,
            hist_bins: 16,
            device: Device::Cpu,
        };
        let r = inspect(
            &input,
            &mut val,
            &mut train,
            &opts,
            &mut stacklab::progress::Silent,
        )
        .unwrap();
        let want = r.parts[0].val_loss;
        let seam = &r.seams[0];
        // What arrives is the normed residual (RMS 1 for a weightless norm), unlike what the
        // upper model expects (its own residual after block 0).
        assert!((seam.rms_received - 1.0).abs() < 1e-3, "{norm}: {seam:?}");
        assert!((seam.rms_expected - 1.0).abs() > 0.05, "{norm}: {seam:?}");
        assert!((seam.rms_ratio - seam.rms_received / seam.rms_expected).abs() < 1e-12);
        // The norm changes the stack; the stitch replaces it, so the identity map is the
        // model itself and least squares recovers it.
        let st = &seam.stitch;
        assert!((r.val_loss_stack - want).abs() > 1e-3, "{norm}: {st:?}");
        assert!((st.none - r.val_loss_stack).abs() < 1e-9);
        assert!((st.identity - want).abs() < 1e-5 * want, "{norm}: {st:?}");
        assert!((st.lstsq - want).abs() < 1e-3 * want, "{norm}: {st:?}");
        // Training the map lowers the loss on its fitting tokens below the identity's.
        assert!(st.fit.trained.unwrap() < st.fit.identity, "{norm}: {st:?}");
        assert_eq!((st.fit_tokens, st.heldout_tokens), (192, 48));
        assert!(st.chosen == "lstsq" || st.chosen == "trained");
    }
}

/// Inspects `self_split(1)` on the fixture's tokens, no trained stitch.
fn inspect_self_split(tokens: i64, hist_bins: usize) -> stacklab::inspect::InspectReport {
    let input = self_split(1);
    let (mut val, mut train) = loaders();
    let opts = InspectOptions {
        tokens,
        batch: 2,
        stitch_steps: 0,
        stitch_lr: 1e-4,
        hist_bins,
        device: Device::Cpu,
    };
    inspect(
        &input,
        &mut val,
        &mut train,
        &opts,
        &mut stacklab::progress::Silent,
    )
    .unwrap()
}

/// Parent attribution on `A[0,k) + A[k,L)`: the stack is A, so at every point the lens's KL
/// to either part's own prediction is the lens's KL to the stack's final prediction, and at
/// the last point the stack follows A exactly (KL 0, every top-1 the same).
#[test]
fn a_stack_of_a_model_with_itself_follows_it_exactly_at_the_last_point() {
    let r = inspect_self_split(192, 8);
    for p in &r.points {
        let models: Vec<&str> = p.attribution.iter().map(|a| a.model.as_str()).collect();
        assert_eq!(models, ["m1", "m2"], "point {}", p.r);
        for a in &p.attribution {
            assert!(
                (a.kl - p.lens.kl_to_final).abs() < 1e-5,
                "point {} {}: KL {} vs the lens's KL to the final {}",
                p.r,
                a.model,
                a.kl,
                p.lens.kl_to_final
            );
            assert!((a.top1_agree - p.lens.top1_agree).abs() < 1e-12);
        }
    }
    let last = r.points.last().unwrap();
    for a in &last.attribution {
        assert!(a.kl.abs() < 1e-5, "{}: {}", a.model, a.kl);
        assert_eq!(a.top1_agree, 1.0);
    }
    assert!(
        r.points[0].attribution[0].kl > 0.01,
        "the embedding is not the prediction"
    );
    // A part's own points carry none.
    assert!(r
        .parts
        .iter()
        .all(|p| p.points.iter().all(|q| q.attribution.is_empty())));
}

/// The Inspect pane's charts each name their series (a legend), and the attribution chart
/// shows the stack's KL to each part.
#[test]
fn the_inspect_panes_charts_have_legends_and_show_attribution() {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use stacklab::tui::jobs::Waker;
    use stacklab::tui::panes::inspect::InspectPane;
    use stacklab::tui::panes::Pane;
    use stacklab::tui::theme::Theme;
    let r = inspect_self_split(96, 8);
    let dir = tempfile::tempdir().unwrap();
    let mut pane = InspectPane::new(
        std::path::Path::new("/nonexistent/stacklab"),
        "cpu",
        dir.path(),
        Waker::none(),
    );
    pane.show(r, "stack m1:0..1 | m2:1..2");
    let (w, h) = (200u16, 60u16);
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    let theme = Theme::shipped_default();
    t.draw(|fr| pane.draw(fr, fr.area(), &theme)).unwrap();
    let buf = t.backend().buffer().clone();
    let screen: String = (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "RMS per layer",
        "stack p50",
        "m1 p50",
        "logit-lens loss",
        "follows: KL",
        "KL to m1",
        "KL to m2",
    ] {
        assert!(
            screen.contains(want),
            "no `{want}` on the screen:\n{screen}"
        );
    }
}
