//! Writes each fuzz target's starting corpus into `fuzz/corpus/<target>/` from files a user
//! really has: the shipped configs, the seed's result rows, a tiny checkpoint written by
//! stacklab itself, a `stacks.csv` and progress lines as stacklab writes them.
//! `scripts/fuzz.sh` runs it before fuzzing.

use std::path::{Path, PathBuf};

use stacklab::config::{ModelConfig, NormKind};
use stacklab::data::shard;
use stacklab::model::Gpt;
use stacklab::runs::checkpoint::{write_weights_checkpoint, CheckpointMeta};
use tch::Device;

fn put(corpus: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = corpus.join(target);
    std::fs::create_dir_all(&d).expect("a corpus folder");
    std::fs::write(d.join(name), bytes).expect("a corpus file");
}

fn joined(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    v.push(0);
    v.extend_from_slice(b);
    v
}

fn tiny_checkpoint(scratch: &Path) -> (Vec<u8>, Vec<u8>) {
    let cfg = ModelConfig {
        vocab_size: 32,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        seq_len: 8,
        norm_wte: NormKind::None,
        norm_lm_head: NormKind::RmsNorm,
    };
    let model = Gpt::new(&cfg, 0, Device::Cpu);
    let meta = CheckpointMeta {
        name: "tiny/step_000001".into(),
        step: 1,
        total_steps: 1,
        tokens_seen: 8,
        seed: 0,
        train_time_s: 0.1,
        device: "cpu".into(),
        stacklab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: "unknown".into(),
        created_at: "2026-12-04T00:00:00Z".into(),
        wte_sha256: stacklab::model::weights::wte_hash(&model.wte),
        wte_frozen: false,
        val_tokens: 8,
        model: cfg,
        train_data: Default::default(),
        data_position: None,
        adamw_step: 1,
        from_model: None,
        val_loss_history: vec![],
        init_from: None,
        blocks: vec![],
    };
    let dir = scratch.join("step_000001");
    let _ = std::fs::remove_dir_all(&dir);
    write_weights_checkpoint(&dir, &model, &meta, "").expect("a tiny checkpoint");
    let read = |f: &str| std::fs::read(dir.join(f)).expect("a checkpoint file");
    (read("meta.toml"), read("model.safetensors"))
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = root.join("fuzz").join("corpus");
    let scratch = std::env::temp_dir().join(format!("stacklab-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch folder");

    let tokens: Vec<u16> = (0..40).map(|i| (i * 7 % 50) as u16).collect();
    put(
        &corpus,
        "shard_header",
        "40-tokens",
        &shard::encode(&tokens).expect("a shard"),
    );
    put(
        &corpus,
        "shard_header",
        "empty",
        &shard::encode(&[]).expect("a shard"),
    );

    let (meta, weights) = tiny_checkpoint(&scratch);
    put(&corpus, "checkpoint_load", "tiny", &joined(&meta, &weights));

    for entry in std::fs::read_dir(root.join("configs")).expect("configs/") {
        let p = entry.expect("a config").path();
        let text = std::fs::read(&p).expect("a config file");
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("sweep") {
            continue;
        }
        put(&corpus, "config_toml", &name, &text);
        let sets = b"schedule.steps=20\nmodel.n_layer=2\nbatch.micro_batch=8\n";
        put(
            &corpus,
            "config_toml",
            &format!("{name}+set"),
            &joined(&text, sets),
        );
    }

    put(
        &corpus,
        "stack_spec",
        "flags",
        b"norm_inter_model = \"rms_norm\"\nuse_first_layer = true\nuse_last_layer = false\n\n[[parts]]\nmodel = \"runs/a\"\n\n[[parts]]\nmodel = \"runs/b\"\nsha256 = \"ab12\"\n",
    );
    put(
        &corpus,
        "stack_spec",
        "ranges",
        b"norm_wte = \"layer_norm\"\n\n[[parts]]\nmodel = \"a\"\nstart = 0\nend = 3\n\n[[parts]]\nmodel = \"b\"\nstart = 1\nend = 4\n\n[[parts]]\nmodel = \"a\"\nstart = 2\nend = 4\n",
    );

    let seed = root.join("tests").join("fixtures").join("seed-results");
    for entry in std::fs::read_dir(&seed).expect("tests/fixtures/seed-results") {
        let p = entry.expect("a results file").path();
        if p.extension().and_then(|e| e.to_str()) != Some("csv") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("a results file");
        // The header and a few rows: enough structure, small enough to mutate quickly.
        let head: Vec<&str> = text.lines().take(7).collect();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        put(
            &corpus,
            "seed_results_csv",
            &name,
            (head.join("\n") + "\n").as_bytes(),
        );
    }

    let columns = stacklab::stack::row::COLUMNS;
    let mut row: Vec<String> = columns.iter().map(|_| String::new()).collect();
    let set = |row: &mut Vec<String>, c: &str, v: &str| {
        let i = columns
            .iter()
            .position(|x| *x == c)
            .expect("a results column");
        row[i] = v.to_string();
    };
    set(&mut row, "created_at", "2026-12-04T10:00:00Z");
    set(&mut row, "val_loss_stack", "4.25");
    set(&mut row, "val_losses", "4.5;4.4");
    set(&mut row, "mean_val_loss", "4.45");
    set(&mut row, "delta_vs_best", "-0.15");
    set(&mut row, "use_first_layer", "true");
    set(&mut row, "use_last_layer", "false");
    set(&mut row, "paths", "runs/a/step_000100;runs/b/step_000100");
    set(&mut row, "ranges", "0:3;1:4");
    set(&mut row, "warnings", "\"a, quoted\"");
    let csv = format!("{}\n{}\n", columns.join(","), row.join(","));
    put(&corpus, "stacks_csv", "one-row", csv.as_bytes());

    put(
        &corpus,
        "progress_lines",
        "mixed",
        b"{\"progress\":{\"stage\":\"eval\",\"done\":3,\"total\":9}}\nwarning: text\n{\"progress\":{\"stage\":\"seam\",\"done\":0,\"total\":0}}\r\n\xff\xfe not utf-8\n",
    );
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("seed corpora written under {}", corpus.display());
}
