use super::*;

fn parse(text: &str) -> Result<TrainConfig> {
    TrainConfig::from_toml_str(text, "test.toml", &[])
}

fn parse_err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

const EMBEDDED: &str = "[data]\nembedded = true\ntrain = \"\"\nval = \"\"\n";

#[test]
fn defaults_are_the_seed_recipe() {
    let c = TrainConfig::default();
    assert_eq!(
        (c.model.n_layer, c.model.n_embd, c.model.vocab_size),
        (12, 768, 50304)
    );
    assert_eq!(c.batch.accumulation_steps(), 8);
    assert_eq!(c.tokens_per_step(), 524_288);
    assert_eq!(c.optimizer.adamw.lr, 0.0036);
    assert_eq!(c.optimizer.muon.lr, 0.00036);
    c.validate("defaults").unwrap();
}

#[test]
fn unknown_key_names_the_file_and_the_nearest_key() {
    let e = parse_err("[optimizer.muon]\nlrr = 0.1\n");
    assert_eq!(
        e,
        "test.toml: `optimizer.muon.lrr`: unknown key; did you mean `optimizer.muon.lr`?"
    );
    let e = parse_err("[model]\nn_layers = 4\n");
    assert!(
        e.contains("`model.n_layers`: unknown key; did you mean `model.n_layer`?"),
        "{e}"
    );
    let e = parse_err("val_tokens = 4\n");
    assert!(
        e.contains("`val_tokens`: unknown key; did you mean `eval.val_tokens`?"),
        "{e}"
    );
}

#[test]
fn wrong_type_is_refused_with_key_and_types() {
    let e = parse_err("[model]\nn_layer = \"four\"\n");
    assert_eq!(
        e,
        "test.toml: `model.n_layer`: expected an integer, found a string \"four\""
    );
    let e = parse_err("[optimizer.adamw]\nbetas = 0.9\n");
    assert!(
        e.contains("`optimizer.adamw.betas`: expected an array"),
        "{e}"
    );
    // An integer where a float is expected is fine.
    let c = parse(&format!("{EMBEDDED}[optimizer.adamw]\nlr = 1\n")).unwrap();
    assert_eq!(c.optimizer.adamw.lr, 1.0);
}

#[test]
fn enum_value_outside_the_list_is_refused() {
    let e = parse_err("[model]\nnorm_wte = \"rms\"\n");
    assert_eq!(
        e,
        "test.toml: `model.norm_wte`: `rms` is not allowed; expected one of: none, rms_norm, layer_norm"
    );
    let e = parse_err("[coconut]\nmode = \"loop\"\n");
    assert!(
        e.contains("expected one of: shifted, same_position, seed"),
        "{e}"
    );
}

#[test]
fn impossible_combinations_are_refused() {
    let e = parse_err(&format!("{EMBEDDED}[model]\nn_embd = 100\nn_head = 3\n"));
    assert!(
        e.contains("`model.n_embd`: width 100 is not divisible by model.n_head = 3"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{EMBEDDED}[batch]\nglobal_batch = 100\nmicro_batch = 16\n"
    ));
    assert!(
        e.contains("`batch.global_batch`: 100 sequences is not divisible by batch.micro_batch x batch.devices = 16 x 1 = 16"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{EMBEDDED}[batch]\nglobal_batch = 64\nmicro_batch = 16\ndevices = 3\n"
    ));
    assert!(e.contains("16 x 3 = 48"), "{e}");
    let e = parse_err(&format!("{EMBEDDED}[model]\nvocab_size = 70000\n"));
    assert!(
        e.contains("`model.vocab_size`: 70000 does not fit the uint16 tokens of the shard format (at most 65,535)"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{EMBEDDED}[schedule]\nsteps = 100\nwarmdown = 200\n"
    ));
    assert!(
        e.contains("`schedule.warmdown`: 200 is more than schedule.steps = 100"),
        "{e}"
    );
}

#[test]
fn set_overrides_any_key_and_is_checked() {
    let c = TrainConfig::from_toml_str(
        EMBEDDED,
        "t.toml",
        &[
            "model.n_layer=2".into(),
            "model.norm_wte=rms_norm".into(),
            "optimizer.adamw.betas=[0.8, 0.9]".into(),
            "coconut.every = 10".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.model.n_layer, 2);
    assert_eq!(c.model.norm_wte, NormKind::RmsNorm);
    assert_eq!(c.optimizer.adamw.betas, [0.8, 0.9]);
    assert_eq!(c.coconut.every, 10);
    let e = TrainConfig::from_toml_str(EMBEDDED, "t.toml", &["model.n_layr=2".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "--set model.n_layr=2: `model.n_layr`: unknown key; did you mean `model.n_layer`?"
        ),
        "{e}"
    );
    let e = TrainConfig::from_toml_str(EMBEDDED, "t.toml", &["seed".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected key.path=value"), "{e}");
}

#[test]
fn invalid_toml_names_the_line() {
    let e = parse_err("[model]\nn_layer = = 3\n");
    assert!(e.starts_with("test.toml: not valid TOML (line 2)"), "{e}");
}

#[test]
fn round_trips_through_toml() {
    let c = TrainConfig::default();
    let back = TrainConfig::from_toml_str(&c.to_toml_string(), "x", &[]).unwrap();
    assert_eq!(c, back);
}
