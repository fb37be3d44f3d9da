//! Every subcommand with bad arguments and bad config values, as a new user types them:
//! each must exit non-zero with a message that names the flag, key or file at fault, never
//! panic, and leave nothing on disk (no run folder, no half-written file, no changed file).
//!
//! `cargo test --test bad_inputs -- --nocapture` prints what each case answers.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{fixtures, micro_config, Lab};

/// Every file under `dir` with its size: what a case may not change.
fn snapshot(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), 0);
                stack.push(p);
            } else {
                out.insert(rel, e.metadata().unwrap().len());
            }
        }
    }
    out
}

struct Case {
    what: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Every one must appear in stderr.
    want: Vec<&'static str>,
}

fn case(what: &'static str, args: &[&str], want: &[&'static str]) -> Case {
    Case {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        want: want.to_vec(),
    }
}

/// `base` flags (pairs of flag and value) that `extra` does not give itself, then `extra`.
fn with_base(base: &[&str], extra: &[&str]) -> Vec<String> {
    let given = |flag: &str| {
        extra
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut v: Vec<String> = Vec::new();
    let mut i = 0;
    while i < base.len() {
        if base[i].starts_with("--") && i + 1 < base.len() && !base[i + 1].starts_with("--") {
            if !given(base[i]) {
                v.push(base[i].into());
                v.push(base[i + 1].into());
            }
            i += 2;
        } else {
            v.push(base[i].into());
            i += 1;
        }
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// A config file (micro model, embedded data) with `edit` applied to its text.
fn micro(edit: impl Fn(String) -> String) -> String {
    edit(micro_config(2, ""))
}

#[test]
fn every_subcommand_refuses_bad_input_by_name_without_panic_or_leftovers() {
    let lab = Lab::new();
    let fx = fixtures();
    let seed_file = fx.join("reference_model.safetensors");
    let seed_file = seed_file.to_str().unwrap();
    let val_shard = fx.join("reference_val.bin");
    let val_shard = val_shard.to_str().unwrap();
    let train_glob = fx.join("reference_train_*.bin");
    let train_glob = train_glob.to_str().unwrap();

    // Configs, each bad in one way.
    let cfg = |name: &str, text: String| lab.write(name, &text).display().to_string();
    let ok = cfg("ok.toml", micro(|s| s));
    let no_train = cfg(
        "no-train.toml",
        micro(|s| {
            s.replace(
                "embedded = true\ntrain = \"\"\nval = \"\"",
                &format!(
                    "embedded = false\ntrain = \"no/such/train_*.bin\"\nval = \"{val_shard}\""
                ),
            )
        }),
    );
    let big_val = cfg(
        "big-val.toml",
        micro(|s| {
            s.replace(
                "embedded = true\ntrain = \"\"\nval = \"\"",
                &format!("embedded = false\ntrain = \"{train_glob}\"\nval = \"{val_shard}\""),
            )
        }),
    );
    let missing_parent = cfg(
        "missing-parent.toml",
        micro(|s| format!("from_model = \"no-such-run\"\n{s}")),
    );
    let wide_child = cfg(
        "wide-child.toml",
        micro(|s| {
            format!(
                "from_model = \"{seed_file}\"\nseed = 1\n{}",
                s.replace("seed = 0\n", "")
                    .replace("n_embd = 64", "n_embd = 128")
            )
        }),
    );
    let missing_init = cfg(
        "missing-init.toml",
        micro(|s| format!("init_from = \"no/such/model.safetensors\"\n{s}")),
    );
    let momentum = cfg(
        "momentum.toml",
        micro(|s| s.replace("[optimizer.muon]\n", "[optimizer.muon]\nmomentum = 7\n")),
    );
    let eps = cfg("eps.toml", micro(|s| s + "\n[optimizer.adamw]\neps = 0\n"));
    let decay = cfg(
        "decay.toml",
        micro(|s| s + "\n[optimizer.adamw]\nweight_decay = -1\n"),
    );
    let betas = cfg(
        "betas.toml",
        micro(|s| s + "\n[optimizer.adamw]\nbetas = [0.9, 1.5]\n"),
    );
    let heads = cfg(
        "heads.toml",
        micro(|s| s.replace("n_head = 2", "n_head = 64")),
    );
    let not_toml = cfg("not-toml.toml", "[model\nn_layer = 2\n".into());

    // Run folders to resume: not a run, a corrupt config, data that has gone away.
    lab.write("not-a-run/readme.txt", "hello");
    let status =
        r#"{"state":"stopped","pid":1,"step":0,"total_steps":2,"message":"","updated_at":"-"}"#;
    lab.write("checkpoints/corrupt/config.toml", "[model\n");
    lab.write("checkpoints/corrupt/status.json", status);
    lab.write(
        "checkpoints/no-data/config.toml",
        &std::fs::read_to_string(&no_train).unwrap(),
    );
    lab.write("checkpoints/no-data/status.json", status);
    lab.write(
        "checkpoints/no-data/metrics.jsonl",
        "{\"step\":0,\"val_loss\":8.3}\n",
    );
    lab.write("checkpoints/taken/config.toml", &micro(|s| s));
    lab.write("checkpoints/taken/status.json", status);
    let not_a_run = lab.path("not-a-run").display().to_string();
    let corrupt = lab.checkpoints().join("corrupt").display().to_string();
    let no_data = lab.checkpoints().join("no-data").display().to_string();
    lab.write("notes.txt", "not a shard");
    let notes = lab.path("notes.txt").display().to_string();
    lab.write("in.txt", "some text to tokenize");
    // What export must refuse to replace.
    let existing = lab.write("notes.safetensors", "keep me");

    let train = |c: &str, extra: &[&str]| -> Vec<String> {
        with_base(
            &["train", "--config", c, "--name", "r", "--device", "cpu"],
            extra,
        )
    };
    let t = |what, c: &str, extra: &[&str], want: &[&'static str]| Case {
        what,
        args: train(c, extra),
        env: Vec::new(),
        want: want.to_vec(),
    };
    let eval = |extra: &[&str]| -> Vec<String> {
        with_base(
            &[
                "eval",
                "--checkpoint",
                seed_file,
                "--data",
                val_shard,
                "--device",
                "cpu",
            ],
            extra,
        )
    };
    let e = |what, extra: &[&str], want: &[&'static str]| Case {
        what,
        args: eval(extra),
        env: Vec::new(),
        want: want.to_vec(),
    };
    let bench = |extra: &[&str]| -> Vec<String> {
        with_base(
            &[
                "bench", "--config", &ok, "--device", "cpu", "--steps", "1", "--warmup", "0",
            ],
            extra,
        )
    };
    let b = |what, extra: &[&str], want: &[&'static str]| Case {
        what,
        args: bench(extra),
        env: Vec::new(),
        want: want.to_vec(),
    };
    let prepare = |extra: &[&str]| -> Vec<String> {
        with_base(&["data", "prepare", "--out", "prepared"], extra)
    };
    let p = |what, extra: &[&str], want: &[&'static str]| Case {
        what,
        args: prepare(extra),
        env: Vec::new(),
        want: want.to_vec(),
    };

    let cases = vec![
        // train: config values
        t("train: eval.val_tokens more than the val shards hold", &big_val, &[], &["`eval.val_tokens`", "at most"]),
        t("train: a data glob that matches nothing", &no_train, &[], &["data.train", "no shard files match `no/such/train_*.bin`"]),
        t("train: a from_model that does not exist", &missing_parent, &[], &["from_model", "checkpoint `no-such-run` not found"]),
        t("train: a from_model of another width", &wide_child, &[], &["`from_model`", "256 x 64 W", "model.n_embd = 128"]),
        t("train: an init_from that does not exist", &missing_init, &[], &["init_from", "no/such/model.safetensors"]),
        t("train: optimizer.muon.momentum = 7", &momentum, &[], &["momentum.toml: `optimizer.muon.momentum`: 7 must be in [0, 1)"]),
        t("train: optimizer.adamw.eps = 0", &eps, &[], &["`optimizer.adamw.eps`: must be a finite number > 0"]),
        t("train: optimizer.adamw.weight_decay = -1", &decay, &[], &["`optimizer.adamw.weight_decay`: must be a finite number >= 0, found -1"]),
        t("train: betas = [0.9, 1.5]", &betas, &[], &["`optimizer.adamw.betas`: beta2 = 1.5 must be in [0, 1)"]),
        t("train: 64 heads on width 64", &heads, &[], &["`model.n_head`: 64 heads on width 64 give head size 1"]),
        t("train: a config that is not TOML", &not_toml, &[], &["not-toml.toml: not valid TOML (line 1)"]),
        // train: flags
        t("train: --set a misspelt key", &ok, &["--set", "model.n_layr=2"], &["--set model.n_layr=2: `model.n_layr`: unknown key; did you mean `model.n_layer`?"]),
        t("train: --set without =", &ok, &["--set", "seed"], &["--set seed: expected key.path=value"]),
        t("train: --set a value out of range", &ok, &["--set", "optimizer.muon.momentum=7"], &["--set optimizer.muon.momentum=7: `optimizer.muon.momentum`: 7 must be in [0, 1)"]),
        t("train: --set a word for a number", &ok, &["--set", "model.n_layer=two"], &["--set model.n_layer=two: `model.n_layer`: expected an integer, found a string"]),
        t("train: --set a number too big for an integer", &ok, &["--set", "schedule.steps=99999999999999999999"], &["--set schedule.steps=99999999999999999999: `schedule.steps`: expected an integer"]),
        t("train: --set schedule.steps=0", &ok, &["--set", "schedule.steps=0"], &["--set schedule.steps=0: `schedule.steps`: must be at least 1, found 0"]),
        // train: sizes that overflowed, aborted the process or left a run folder behind
        t("train: --set batch.micro_batch x batch.devices past i64", &ok, &["--set", "batch.micro_batch=4294967296", "--set", "batch.devices=4294967296"], &["`batch.global_batch`: 8 sequences is not divisible by batch.micro_batch x batch.devices = 4294967296 x 4294967296 = 18446744073709551616"]),
        t("train: --set batch.ranks x batch.micro_batch wrapping to 0", &ok, &["--set", "batch.global_batch=4611686018427387904", "--set", "batch.micro_batch=2147483648", "--set", "batch.ranks=8589934592"], &["`batch.ranks`:", "= 18446744073709551616"]),
        t("train: --set batch.ranks near u32::MAX", &ok, &["--set", "batch.ranks=4294967295"], &["`batch.ranks`: batch.global_batch = 8 is not divisible"]),
        t("train: --set batch.global_batch=2^32-1", &ok, &["--set", "batch.global_batch=4294967295", "--set", "batch.micro_batch=1"], &["--set batch.global_batch=4294967295", "`batch.global_batch`", "micro-batches a step; at most 65,536"]),
        t("train: --set tokens per step past 2^30", &ok, &["--set", "batch.global_batch=67108864", "--set", "batch.micro_batch=1024"], &["`batch.global_batch`", "tokens a step; at most 1,073,741,824 (2^30) fit"]),
        t("train: --set a micro-batch that cannot be allocated", &ok, &["--set", "batch.global_batch=8388608", "--set", "batch.micro_batch=8388608"], &["`batch.micro_batch`", "activations per micro-batch; at most 17,179,869,184 (2^34) fit"]),
        t("train: --set model.n_embd=2^32", &ok, &["--set", "model.n_embd=4294967296"], &["--set model.n_embd=4294967296: `model.n_embd`", "parameters; at most 68,719,476,736 (2^36) fit"]),
        t("train: --set model.seq_len=2^40", &ok, &["--set", "model.seq_len=1099511627776", "--set", "eval.val_tokens=1099511627776"], &["`model.seq_len`", "at most 17,179,869,184 (2^34) fit"]),
        t("train: --set warmup + warmdown past i64", &ok, &["--set", "schedule.warmup=9223372036854775807"], &["`schedule.warmup`: warmup 9223372036854775807 + warmdown 0 is more than schedule.steps = 2"]),
        t("train: --set schedule.steps past what a run counts", &ok, &["--set", "schedule.steps=9223372036854775807"], &["`schedule.steps`", "more tokens than a run can count"]),
        t("train: --stop-after 0", &ok, &["--stop-after", "0"], &["--stop-after must be a step of at least 1"]),
        t("train: --stop-after abc", &ok, &["--stop-after", "abc"], &["invalid value 'abc' for '--stop-after <STEP>'"]),
        t("train: --name with a slash", &ok, &["--name", "../escape"], &["run name `../escape` is not usable as a folder name"]),
        t("train: --name of an existing run", &ok, &["--name", "taken"], &["run `taken` already exists", "--resume"]),
        t("train: --device tpu", &ok, &["--device", "tpu"], &["--device tpu: unknown device `tpu`"]),
        t("train: --device cuda:7", &ok, &["--device", "cuda:7"], &["--device cuda:7", "device `cuda:7`"]),
        case("train: --config that does not exist", &["train", "--config", "no-such-config"], &["config `no-such-config` not found"]),
        case("train: --device before the subcommand", &["--device", "cpu", "train", "--config", "tiny"], &["--device cpu before the subcommand is the lab's", "stacklab train --device cpu"]),
        // train --resume
        case("train --resume: a folder that does not exist", &["train", "--resume", "no/such/run"], &["--resume no/such/run: not a run folder"]),
        case("train --resume: a folder that is not a run", &["train", "--resume", &not_a_run], &["--resume", "not a run folder (expected config.toml)"]),
        case("train --resume: a run whose config is not TOML", &["train", "--resume", &corrupt, "--device", "cpu"], &["corrupt/config.toml: not valid TOML"]),
        case("train --resume: a run without a checkpoint whose data has gone", &["train", "--resume", &no_data, "--device", "cpu"], &["data.train", "no shard files match `no/such/train_*.bin`"]),
        case("train --resume with --set", &["train", "--resume", &no_data, "--set", "seed=1"], &["'--resume <RUN_DIR>' cannot be used with '--set <KEY=VALUE>'"]),
        // eval
        e("eval: --n-head 64 on a width-64 seed file", &["--n-head", "64"], &["`model.n_head`: 64 heads on width 64 give head size 1", "--n-head"]),
        e("eval: --n-head 3 on width 64", &["--n-head", "3"], &["width 64 is not divisible by 3 heads", "--n-head"]),
        e("eval: --n-head 0", &["--n-head", "0"], &["--n-head 0: must be at least 1"]),
        e("eval: --seq-len 0", &["--seq-len", "0"], &["--seq-len 0: must be at least 1"]),
        e("eval: --tokens 10 (less than a sequence)", &["--seq-len", "48", "--tokens", "10"], &["--tokens 10: less than one sequence of 48 tokens (--seq-len)"]),
        e("eval: --tokens more than the shard holds", &["--seq-len", "48", "--tokens", "100000"], &["--tokens 100000: the val shards", "hold at most 192 tokens"]),
        e("eval: --batch=-1", &["--batch=-1"], &["--batch -1: must be at least 1"]),
        e("eval: --batch larger than a shard holds", &["--seq-len", "32", "--tokens", "1000", "--batch", "7"], &["--batch 7: shard", "--batch 6 or less fits"]),
        e("eval: --norm-wte rms", &["--norm-wte", "rms"], &["--norm-wte: unknown norm `rms`"]),
        e("eval: --data that matches nothing", &["--data", "no/such/val_*.bin", "--seq-len", "48"], &["--data no/such/val_*.bin", "no shard files match"]),
        e("eval: --data a file that is not a shard", &["--data", &notes, "--seq-len", "48"], &["--data", "notes.txt", "shorter than the 1024-byte header"]),
        e("eval: --seq-len 2^40", &["--seq-len", "1099511627776", "--tokens", "2199023255552"], &["--seq-len 1099511627776", "`model.seq_len`", "at most 17,179,869,184 (2^34) fit"]),
        e("eval: --tokens abc", &["--tokens", "abc"], &["invalid value 'abc' for '--tokens <TOKENS>'"]),
        case("eval: --checkpoint that does not exist", &["eval", "--checkpoint", "no-such-checkpoint"], &["--checkpoint", "checkpoint `no-such-checkpoint` not found"]),
        case("eval: --checkpoint a text file", &["eval", "--checkpoint", &notes], &["notes.txt: expected a .safetensors file or a checkpoint folder"]),
        case("eval: --checkpoint a seed file without --data", &["eval", "--checkpoint", seed_file, "--device", "cpu"], &["a seed-format file does not say which data it was trained on; give --data GLOB"]),
        // bench
        b("bench: --accum 0", &["--accum", "0"], &["--accum 0: must be at least 1"]),
        b("bench: --steps 0", &["--steps", "0"], &["--steps 0: must be at least 1"]),
        b("bench: --batch=0", &["--batch=0"], &["--batch 0: must be at least 1"]),
        b("bench: --warmup=-1", &["--warmup=-1"], &["--warmup -1: must be 0 or more"]),
        b("bench: --batch 2^32", &["--batch", "4294967296"], &["--batch 4294967296:", "activations per micro-batch; at most 17,179,869,184 (2^34) fit"]),
        b("bench: --set a bad value", &["--set", "model.n_head=3"], &["--set model.n_head=3: `model.n_embd`: width 64 is not divisible by model.n_head = 3"]),
        b("bench: --set a misspelt key", &["--set", "batch.micro=2"], &["--set batch.micro=2: `batch.micro`: unknown key; valid keys here: devices, global_batch, micro_batch, ranks"]),
        b("bench: --device tpu", &["--device", "tpu"], &["--device tpu: unknown device `tpu`"]),
        case("bench: --config that does not exist", &["bench", "--config", "no-such-config", "--device", "cpu"], &["config `no-such-config` not found"]),
        // export
        case("export: --out without .safetensors", &["export", "--checkpoint", seed_file, "--out", "model.bin"], &["--out model.bin: the file name must end in .safetensors"]),
        case("export: --out in a missing folder", &["export", "--checkpoint", seed_file, "--out", "no/such/m.safetensors"], &["--out no/such/m.safetensors: folder no/such does not exist"]),
        case("export: --out an existing file", &["export", "--checkpoint", seed_file, "--out", &notes.replace(".txt", ".safetensors")], &["the file exists; pass --force to replace it"]),
        case("export: --prefix without a dot", &["export", "--checkpoint", seed_file, "--out", "m.safetensors", "--prefix", "_orig_mod"], &["--prefix _orig_mod: a prefix of state-dict names ends with '.'"]),
        case("export: --checkpoint that does not exist", &["export", "--checkpoint", "nope", "--out", "m.safetensors"], &["--checkpoint", "checkpoint `nope` not found"]),
        // data
        p("data prepare: --input that does not exist", &["--input", "no-such.txt", "--tokenizer", "train:300"], &["--input no-such.txt: no such file or folder"]),
        p("data prepare: --tokenizer train:10", &["--input", "in.txt", "--tokenizer", "train:10"], &["--tokenizer train:10: vocabulary must be between 257 and 65,536"]),
        p("data prepare: --tokenizer a missing file", &["--input", "in.txt", "--tokenizer", "no.json"], &["--tokenizer no.json: no such file"]),
        p("data prepare: --val-fraction 2", &["--input", "in.txt", "--tokenizer", "train:300", "--val-fraction", "2"], &["--val-fraction 2: expected a number between 0 and 1"]),
        p("data prepare: --shard-tokens 0", &["--input", "in.txt", "--tokenizer", "train:300", "--shard-tokens", "0"], &["--shard-tokens must be at least 1"]),
        p("data prepare: --shard-tokens -5", &["--input", "in.txt", "--tokenizer", "train:300", "--shard-tokens=-5"], &["invalid value '-5' for '--shard-tokens <SHARD_TOKENS>'"]),
        case("data prepare: --device (not a device command)", &["data", "prepare", "--input", "in.txt", "--tokenizer", "train:300", "--out", "o", "--device", "cpu"], &["unexpected argument '--device'"]),
        case("data info: a glob that matches nothing", &["data", "info", "no/such/*.bin"], &["no shard files match `no/such/*.bin`"]),
        case("data info: a file that is not a shard", &["data", "info", &notes], &["notes.txt", "shorter than the 1024-byte header"]),
        Case {
            what: "data embedded: a data dir that is a file",
            args: vec!["data".into(), "embedded".into()],
            env: vec![("STACKLAB_DATA_DIR", notes.clone())],
            want: vec!["cannot create", "notes.txt/embedded"],
        },
        case("data embedded: an extra argument", &["data", "embedded", "now"], &["unexpected argument 'now'"]),
        // doctor
        case("doctor: --device (not a device command)", &["doctor", "--device", "cpu"], &["unexpected argument '--device'"]),
        case("doctor: --jsn", &["doctor", "--jsn"], &["unexpected argument '--jsn'", "--json"]),
    ];

    let before = snapshot(lab.dir.path());
    let mut failures = Vec::new();
    for c in &cases {
        let mut cmd = lab.cmd(&c.args.iter().map(String::as_str).collect::<Vec<_>>());
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("the stacklab binary runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let want = &c.want;
        let first = err
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or_else(|| err.lines().next().unwrap_or(""));
        println!("| {} | `{}` |", c.what, first.replace('|', "\\|"));
        let mut wrong = Vec::new();
        if out.status.success() {
            wrong.push("exited 0".to_string());
        }
        if err.contains("panicked") || err.contains("internal error") {
            wrong.push("panicked".into());
        }
        for w in want {
            if !err.contains(w) {
                wrong.push(format!("lacks {w:?}"));
            }
        }
        let after = snapshot(lab.dir.path());
        if after != before {
            let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
            let changed: Vec<_> = before
                .iter()
                .filter(|(k, v)| after.get(*k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            wrong.push(format!(
                "left on disk: added {added:?}, changed or removed {changed:?}"
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{} ({:?}): {}\n{err}",
                c.what,
                c.args,
                wrong.join("; ")
            ));
        }
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
