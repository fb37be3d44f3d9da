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
        e.contains("`model.vocab_size`: 70000 does not fit the uint16 tokens of the shard format (at most 65,536"),
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

#[test]
fn every_optimizer_value_outside_its_range_is_refused_by_key() {
    let cases = [
        (
            "[optimizer.muon]\nmomentum = 7\n",
            "`optimizer.muon.momentum`: 7 must be in [0, 1)",
        ),
        (
            "[optimizer.muon]\nmomentum = 1.0\n",
            "`optimizer.muon.momentum`: 1 must be in [0, 1)",
        ),
        (
            "[optimizer.muon]\nmomentum = -0.1\n",
            "`optimizer.muon.momentum`: -0.1 must be in [0, 1)",
        ),
        (
            "[optimizer.adamw]\nweight_decay = -1\n",
            "`optimizer.adamw.weight_decay`: must be a finite number >= 0, found -1",
        ),
        (
            "[optimizer.adamw]\neps = 0\n",
            "`optimizer.adamw.eps`: must be a finite number > 0",
        ),
        (
            "[optimizer.adamw]\neps = nan\n",
            "`optimizer.adamw.eps`: must be a finite number > 0",
        ),
        (
            "[optimizer.adamw]\nbetas = [0.9, 1.0]\n",
            "`optimizer.adamw.betas`: beta2 = 1 must be in [0, 1)",
        ),
        (
            "[optimizer.adamw]\nbetas = [-0.5, 0.9]\n",
            "`optimizer.adamw.betas`: beta1 = -0.5 must be in [0, 1)",
        ),
        (
            "[optimizer.adamw]\nlr = inf\n",
            "`optimizer.adamw.lr`: must be a finite number >= 0, found inf",
        ),
        (
            "[optimizer.muon]\nlr = -1e-3\n",
            "`optimizer.muon.lr`: must be a finite number >= 0",
        ),
        (
            "[optimizer.muon]\nns_steps = 0\n",
            "`optimizer.muon.ns_steps`: must be at least 1, found 0",
        ),
        (
            "[batch]\nranks = 0\n",
            "`batch.ranks`: must be at least 1, found 0",
        ),
        (
            "[eval]\nval_every = -1\n",
            "`eval.val_every`: must be 0 or more, found -1",
        ),
        (
            "[eval]\nval_tokens = 10\n",
            "`eval.val_tokens`: 10 is less than one sequence",
        ),
        (
            "log_every = -5\n",
            "`log_every`: must be 0 or more, found -5",
        ),
        (
            "[model]\nn_layer = 0\n",
            "`model.n_layer`: must be at least 1, found 0",
        ),
        (
            "[model]\nn_embd = 64\nn_head = 64\n",
            "`model.n_head`: 64 heads on width 64 give head size 1, which must be even",
        ),
    ];
    for (body, want) in cases {
        // Top-level keys go before the first table.
        let text = if body.starts_with('[') {
            format!("{EMBEDDED}{body}")
        } else {
            format!("{body}{EMBEDDED}")
        };
        let e = parse_err(&text);
        assert!(
            e.starts_with("test.toml: ") && e.contains(want),
            "want {want:?}, got {e}"
        );
    }
    // The edges that are allowed.
    parse(&format!(
        "{EMBEDDED}[optimizer.muon]\nmomentum = 0\n[optimizer.adamw]\nbetas = [0, 0.999]\nweight_decay = 0\nlr = 0\n"
    ))
    .unwrap();
}

#[test]
fn a_vocabulary_of_65536_fits_the_shards() {
    let c = parse(&format!("{EMBEDDED}[model]\nvocab_size = 65536\n")).unwrap();
    assert_eq!(c.model.vocab_size, 65536);
    let e = parse_err(&format!("{EMBEDDED}[model]\nvocab_size = 65537\n"));
    assert!(e.contains("`model.vocab_size`: 65537 does not fit"), "{e}");
}

#[test]
fn an_error_a_set_flag_causes_names_the_flag_not_the_file() {
    let load = |sets: &[&str]| {
        TrainConfig::from_toml_str(
            EMBEDDED,
            "t.toml",
            &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let e = load(&["optimizer.muon.momentum=7"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--set optimizer.muon.momentum=7: `optimizer.muon.momentum`: 7 must be in [0, 1)"
    );
    // A combination the override broke names the override even under another key.
    let e = load(&["seed=3", "schedule.steps=10"])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set seed=3 --set schedule.steps=10: `schedule.warmdown`"),
        "{e}"
    );
    let e = load(&["model.n_head = 5"]).unwrap_err().to_string();
    assert!(
        e.starts_with("--set model.n_head = 5: `model.n_embd`"),
        "{e}"
    );
    // An error already in the file still names the file.
    let e = TrainConfig::from_toml_str(
        &format!("{EMBEDDED}[optimizer.adamw]\neps = 0\n"),
        "t.toml",
        &["seed=1".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("t.toml: `optimizer.adamw.eps`"), "{e}");
}

#[test]
fn set_data_embedded_switches_a_config_with_shard_globs_to_the_embedded_corpus() {
    let globs = "[data]\ntrain = \"a/train_*.bin\"\nval = \"a/val_*.bin\"\n";
    let c = TrainConfig::from_toml_str(globs, "g.toml", &["data.embedded=true".into()]).unwrap();
    assert!(c.data.embedded);
    assert_eq!((c.data.train.as_str(), c.data.val.as_str()), ("", ""));
    // The defaults (FineWeb globs) switch too.
    let c = TrainConfig::from_toml_str("", "d.toml", &["data.embedded=true".into()]).unwrap();
    assert!(c.data.embedded && c.data.train.is_empty());
    // And shard globs switch an embedded config off the embedded corpus.
    let c = TrainConfig::from_toml_str(
        EMBEDDED,
        "e.toml",
        &["data.train=x/t_*.bin".into(), "data.val=x/v_*.bin".into()],
    )
    .unwrap();
    assert!(!c.data.embedded);
    assert_eq!(c.data.val, "x/v_*.bin");
    // In a file, both at once is still refused: the file should say what it means.
    let e = parse_err(&format!("{globs}embedded = true\n"));
    assert!(
        e.contains("`data.embedded`: is true but data.train / data.val are also set"),
        "{e}"
    );
}

#[test]
fn retention_keys_default_to_keeping_all_and_are_checked() {
    let c = parse(EMBEDDED).unwrap();
    assert_eq!((c.checkpoint_keep_last, c.checkpoint_keep_every), (0, 0));
    let c = parse(&format!(
        "checkpoint_keep_last = 3\ncheckpoint_keep_every = 500\n{EMBEDDED}"
    ))
    .unwrap();
    assert_eq!((c.checkpoint_keep_last, c.checkpoint_keep_every), (3, 500));
    let e = parse_err(&format!("checkpoint_keep_last = -2\n{EMBEDDED}"));
    assert_eq!(
        e,
        "test.toml: `checkpoint_keep_last`: must be 0 or more, found -2"
    );
    let e = parse_err(&format!("checkpoint_keep_every = \"10\"\n{EMBEDDED}"));
    assert!(
        e.contains("`checkpoint_keep_every`: expected an integer, found a string"),
        "{e}"
    );
    let e = parse_err(&format!("checkpoint_keep_every = 100\n{EMBEDDED}"));
    assert!(
        e.contains("`checkpoint_keep_every`: 100 has no effect while checkpoint_keep_last = 0"),
        "{e}"
    );
    let e = parse_err(&format!("checkpoint_keep_lst = 1\n{EMBEDDED}"));
    assert!(e.contains("did you mean `checkpoint_keep_last`?"), "{e}");
    let e = TrainConfig::from_toml_str(EMBEDDED, "test.toml", &["checkpoint_keep_last=-1".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--set checkpoint_keep_last=-1: `checkpoint_keep_last`"),
        "{e}"
    );
}
