//! Unit tests of the seed's names: prefixes, buffers and a lone `lm_head.weight` accepted,
//! shapes read off, and untied, foreign or missing tensors refused by name.

use super::*;

fn t(shape: &[i64], v: f64) -> Tensor {
    Tensor::full(shape, v, (Kind::Float, Device::Cpu))
}

fn seed_dict(c: i64, vocab: i64) -> BTreeMap<String, Tensor> {
    let mut m = BTreeMap::new();
    for i in 0..2 {
        m.insert(
            format!("_orig_mod.transformer.h.{i}.attn.c_attn.weight"),
            t(&[3 * c, c], 0.1),
        );
        m.insert(
            format!("_orig_mod.transformer.h.{i}.attn.c_proj.weight"),
            t(&[c, c], 0.1),
        );
        m.insert(
            format!("_orig_mod.transformer.h.{i}.mlp.c_fc.weight"),
            t(&[4 * c, c], 0.1),
        );
        m.insert(
            format!("_orig_mod.transformer.h.{i}.mlp.c_proj.weight"),
            t(&[c, 4 * c], 0.1),
        );
        m.insert(
            format!("_orig_mod.transformer.h.{i}.attn.rotary.inv_freq"),
            t(&[32], 1.0),
        );
    }
    m.insert("_orig_mod.lm_head.weight".into(), t(&[vocab, c], 0.2));
    m
}

#[test]
fn seed_names_with_lm_head_only_load_and_shapes_are_read_off() {
    let dict = normalise_seed_names(seed_dict(128, 300), "x").unwrap();
    assert!(dict.contains_key(WTE) && !dict.contains_key(LM_HEAD));
    assert!(!dict
        .keys()
        .any(|k| k.contains("inv_freq") || k.starts_with("_orig_mod.")));
    let cfg = infer_config(&dict, &SeedOptions::default(), "x").unwrap();
    assert_eq!(
        (cfg.vocab_size, cfg.n_layer, cfg.n_embd, cfg.n_head),
        (300, 2, 128, 2)
    );
    assert_eq!(
        (cfg.norm_wte, cfg.norm_lm_head),
        (NormKind::None, NormKind::RmsNorm)
    );
    let m = model_from_tensors(&cfg, dict, Device::Cpu, "x").unwrap();
    assert_eq!(m.blocks.len(), 2);
}

#[test]
fn untied_or_foreign_tensors_are_refused_by_name() {
    let mut d = seed_dict(64, 50);
    d.insert("transformer.wte.weight".into(), t(&[50, 64], 0.3));
    let e = normalise_seed_names(d, "m.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "m.safetensors: transformer.wte.weight [50, 64] and lm_head.weight [50, 64] differ"
        ),
        "{e}"
    );

    let mut d = normalise_seed_names(seed_dict(64, 50), "m").unwrap();
    d.insert("transformer.ln_f.weight".into(), t(&[64], 1.0));
    let cfg = infer_config(&d, &SeedOptions::default(), "m").unwrap();
    let e = model_from_tensors(&cfg, d, Device::Cpu, "m")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unexpected tensor transformer.ln_f.weight with shape [64]"),
        "{e}"
    );

    let mut d = normalise_seed_names(seed_dict(64, 50), "m").unwrap();
    d.remove("transformer.h.1.mlp.c_fc.weight");
    let cfg = infer_config(&d, &SeedOptions::default(), "m").unwrap();
    let e = model_from_tensors(&cfg, d, Device::Cpu, "m")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing tensor transformer.h.1.mlp.c_fc.weight (expected shape [256, 64])"),
        "{e}"
    );

    let e = normalise_seed_names(BTreeMap::new(), "empty")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no transformer.wte.weight or lm_head.weight"),
        "{e}"
    );
}
