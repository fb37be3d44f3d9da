//! `stacklab data prepare` and the embedded corpus: token counts agree with the tokenizer and
//! decode(encode(text)) gives the text back.

mod common;

use common::Lab;
use stacklab::data::Shard;
use tokenizers::Tokenizer;

fn shard_tokens(glob: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for f in stacklab::data::expand_glob(glob).unwrap() {
        let s = Shard::open(&f).unwrap();
        out.extend((0..s.len()).map(|i| s.token(i) as u32));
    }
    out
}

const TEXT: &str = "\
First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?
  (indented)   spaces   and\ttabs, digits 12345 and unicode: café, naïve, 東京.
";

#[test]
fn prepare_a_small_text_with_a_trained_tokenizer() {
    let lab = Lab::new();
    let text = TEXT.repeat(40);
    let input = lab.write("small.txt", &text);
    let out = lab.path("prepared");
    lab.ok(&[
        "data",
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--tokenizer",
        "train:300",
        "--out",
        out.to_str().unwrap(),
        "--val-fraction",
        "0.2",
    ]);
    let tok = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert!(tok.get_vocab_size(true) <= 300);
    let train = shard_tokens(out.join("train_*.bin").to_str().unwrap());
    let val = shard_tokens(out.join("val_*.bin").to_str().unwrap());
    let enc = tok.encode(text.as_str(), false).unwrap();
    let ids = enc.get_ids();
    // The shards hold exactly the tokenizer's encoding of the text, split 80/20.
    assert_eq!(train.len() + val.len(), ids.len());
    assert_eq!([train.clone(), val.clone()].concat(), ids);
    assert_eq!(val.len(), (ids.len() as f64 * 0.2).round() as usize);
    assert_eq!(tok.decode(ids, false).unwrap(), text);
    let info = std::fs::read_to_string(out.join("dataset.toml")).unwrap();
    assert!(
        info.contains(&format!("train_tokens = {}", train.len())),
        "{info}"
    );

    // A second prepare into the same folder is refused unless --force.
    let e = lab.fails(&[
        "data",
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--tokenizer",
        "train:300",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("already holds a dataset; pass --force"), "{e}");
}

#[test]
fn prepare_a_folder_of_txt_and_gz_with_an_existing_tokenizer() {
    let lab = Lab::new();
    // A tokenizer from a first preparation, reused for a folder of two documents.
    let first = lab.write("one.txt", &TEXT.repeat(20));
    let tok_dir = lab.path("tok");
    lab.ok(&[
        "data",
        "prepare",
        "--input",
        first.to_str().unwrap(),
        "--tokenizer",
        "train:280",
        "--out",
        tok_dir.to_str().unwrap(),
    ]);
    let tok_file = tok_dir.join("tokenizer.json");

    let docs = lab.path("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let a = "To be, or not to be, that is the question:\n".repeat(30);
    let b = "Whether 'tis nobler in the mind to suffer\n".repeat(30);
    std::fs::write(docs.join("a.txt"), &a).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b.as_bytes()).unwrap();
    std::fs::write(docs.join("b.txt.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(docs.join("ignored.md"), "not text input").unwrap();

    let out = lab.path("folder");
    lab.ok(&[
        "data",
        "prepare",
        "--input",
        docs.to_str().unwrap(),
        "--tokenizer",
        tok_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--val-fraction",
        "0.1",
    ]);
    let tok = Tokenizer::from_file(&tok_file).unwrap();
    let eot = tok.token_to_id("<|endoftext|>").unwrap();
    let mut want: Vec<u32> = tok.encode(a.as_str(), false).unwrap().get_ids().to_vec();
    want.push(eot);
    want.extend(tok.encode(b.as_str(), false).unwrap().get_ids());
    let got = [
        shard_tokens(out.join("train_*.bin").to_str().unwrap()),
        shard_tokens(out.join("val_*.bin").to_str().unwrap()),
    ]
    .concat();
    assert_eq!(got, want, "documents joined by <|endoftext|>");
    assert_eq!(
        tok.decode(&got, false).unwrap(),
        format!("{a}<|endoftext|>{b}")
    );
}

#[test]
fn bad_prepare_input_is_refused_clearly() {
    let lab = Lab::new();
    let out = lab.path("o");
    let e = lab.fails(&[
        "data",
        "prepare",
        "--input",
        "missing.txt",
        "--tokenizer",
        "train:300",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("--input missing.txt: no such file or folder"),
        "{e}"
    );
    let input = lab.write("t.txt", "hello\n");
    let e = lab.fails(&[
        "data",
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--tokenizer",
        "gpt2.json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("--tokenizer gpt2.json: no such file"), "{e}");
    let e = lab.fails(&[
        "data",
        "prepare",
        "--input",
        input.to_str().unwrap(),
        "--tokenizer",
        "train:300",
        "--out",
        out.to_str().unwrap(),
        "--val-fraction",
        "1.5",
    ]);
    assert!(e.contains("--val-fraction 1.5"), "{e}");
    let bin = lab.path("b.txt");
    std::fs::write(&bin, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let e = lab.fails(&[
        "data",
        "prepare",
        "--input",
        bin.to_str().unwrap(),
        "--tokenizer",
        "train:300",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("not UTF-8 text"), "{e}");
    assert!(!out.exists(), "nothing written on failure");
}

#[test]
fn embedded_corpus_is_prepared_once_and_matches_its_tokenizer() {
    let lab = Lab::new();
    let out = lab.ok(&["data", "embedded"]);
    assert!(out.contains("vocabulary 4096"), "{out}");
    let dir = common::shared_data_dir().join("embedded/shakespeare-bpe4096-v1");
    let info_before = std::fs::read_to_string(dir.join("dataset.toml")).unwrap();
    // A second call reuses the preparation.
    lab.ok(&["data", "embedded"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("dataset.toml")).unwrap(),
        info_before
    );

    let tok = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let text =
        stacklab::data::prepare::document_from_bytes("x", stacklab::data::embedded::CORPUS_GZ)
            .unwrap()
            .text;
    let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    let got = [
        shard_tokens(dir.join("train_*.bin").to_str().unwrap()),
        shard_tokens(dir.join("val_*.bin").to_str().unwrap()),
    ]
    .concat();
    assert_eq!(got.len(), ids.len());
    assert!(
        got == ids,
        "the shards hold the tokenizer's encoding of the corpus"
    );
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

#[test]
fn data_info_reports_and_refuses_malformed_shards() {
    let lab = Lab::new();
    let good = common::fixtures().join("reference_val.bin");
    let out = lab.ok(&["data", "info", good.to_str().unwrap()]);
    assert!(out.contains("193 tokens"), "{out}");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes.truncate(bytes.len() - 3);
    let bad = lab.path("bad_val_000000.bin");
    std::fs::write(&bad, bytes).unwrap();
    let e = lab.fails(&["data", "info", bad.to_str().unwrap()]);
    assert!(
        e.contains("bad_val_000000.bin: header says 193 tokens"),
        "{e}"
    );
}

/// The embedded corpus's shards and tokenizer, prepared from scratch, are byte for byte
/// what the in-memory preparation made before it streamed (sha256 recorded from that
/// version's output; dataset.toml differs only by its new keys and its date).
#[test]
fn embedded_preparation_is_unchanged_by_streaming() {
    use sha2::{Digest, Sha256};
    let lab = Lab::new();
    let fresh = lab.path("fresh-data");
    let out = lab
        .cmd(&["data", "embedded"])
        .env("STACKLAB_DATA_DIR", &fresh)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = fresh.join("embedded/shakespeare-bpe4096-v1");
    for (file, want) in [
        (
            "train_000000.bin",
            "394080d0209aeee6ab44b2b3a42d1925df133ba01bf66f115475518fb7a37155",
        ),
        (
            "val_000000.bin",
            "dfe67daadab3d21a1fc12870cdafad5038d6c01fcfc66cd396a7687776a84917",
        ),
        (
            "tokenizer.json",
            "f5634f1491b8f7a18890224de92de0a9c7c06b135c8af814f025ab12d262dc0b",
        ),
    ] {
        let got = Sha256::digest(std::fs::read(dir.join(file)).unwrap());
        let got: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want, "{file}");
    }
    let info = std::fs::read_to_string(dir.join("dataset.toml")).unwrap();
    assert!(info.contains("train_tokens = 1486722"), "{info}");
    assert!(info.contains("val_tokens = 165191"), "{info}");
    assert!(info.contains("train_sample_mb = 256"), "{info}");
}

fn prepare_args<'a>(input: &'a str, tok: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "data",
        "prepare",
        "--input",
        input,
        "--tokenizer",
        tok,
        "--out",
        out,
    ];
    a.extend_from_slice(extra);
    a
}

#[test]
fn json_lines_val_tokens_many_shards_and_a_bounded_sample() {
    let lab = Lab::new();
    // A tokenizer first, trained on a bounded sample of a larger text.
    let big = lab.write("big.txt", &TEXT.repeat(6000)); // about 2.2 MB
    let tok_dir = lab.path("tok");
    lab.ok(&prepare_args(
        big.to_str().unwrap(),
        "train:300",
        tok_dir.to_str().unwrap(),
        &["--train-sample-mb", "1"],
    ));
    let info = std::fs::read_to_string(tok_dir.join("dataset.toml")).unwrap();
    assert!(info.contains("train_sample_mb = 1\n"), "{info}");
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("train_sample_bytes = "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1_000_000..1_400_000).contains(&used),
        "sample {used} bytes"
    );
    let tok_file = tok_dir.join("tokenizer.json");
    let tok = Tokenizer::from_file(&tok_file).unwrap();
    let eot = tok.token_to_id("<|endoftext|>").unwrap();

    // JSON lines (one gzipped), the text under "body"; blank lines are skipped.
    let docs = lab.path("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let texts: Vec<String> = (0..30)
        .map(|i| format!("{}{i}\n", TEXT.repeat(i % 4 + 1)))
        .collect();
    let line = |t: &String| serde_json::json!({"id": 1, "body": t}).to_string() + "\n";
    let first: String = texts[..20].iter().map(line).collect::<String>() + "\n";
    std::fs::write(docs.join("a.jsonl"), first).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let second: String = texts[20..].iter().map(line).collect();
    std::io::Write::write_all(&mut gz, second.as_bytes()).unwrap();
    std::fs::write(docs.join("b.jsonl.gz"), gz.finish().unwrap()).unwrap();

    let mut want: Vec<u32> = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        if i > 0 {
            want.push(eot);
        }
        want.extend(tok.encode(t.as_str(), false).unwrap().get_ids());
    }
    let out = lab.path("jsonl");
    let (input, tok_s, out_s) = (
        docs.to_str().unwrap(),
        tok_file.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let e = lab.fails(&prepare_args(input, tok_s, out_s, &[]));
    assert!(e.contains("a.jsonl:1: no string field `text`"), "{e}");
    assert!(e.contains("--text-field"), "{e}");
    lab.ok(&prepare_args(
        input,
        tok_s,
        out_s,
        &[
            "--text-field",
            "body",
            "--val-tokens",
            "700",
            "--shard-tokens",
            "1000",
        ],
    ));
    let val = shard_tokens(out.join("val_*.bin").to_str().unwrap());
    let train = shard_tokens(out.join("train_*.bin").to_str().unwrap());
    assert_eq!(val, want[..700], "the first 700 tokens are val");
    assert_eq!(train, want[700..]);
    let n_train_shards = stacklab::data::expand_glob(out.join("train_*.bin").to_str().unwrap())
        .unwrap()
        .len();
    assert_eq!(n_train_shards, (want.len() - 700).div_ceil(1000));
    let info = std::fs::read_to_string(out.join("dataset.toml")).unwrap();
    assert!(info.contains("val_split = \"first_tokens\""), "{info}");

    // The tail split over many small shards gives the same stream, cut at the same token.
    let out2 = lab.path("tail");
    lab.ok(&prepare_args(
        input,
        tok_s,
        out2.to_str().unwrap(),
        &[
            "--text-field",
            "body",
            "--val-fraction",
            "0.3",
            "--shard-tokens",
            "777",
        ],
    ));
    let val = shard_tokens(out2.join("val_*.bin").to_str().unwrap());
    let train = shard_tokens(out2.join("train_*.bin").to_str().unwrap());
    let n_val = (want.len() as f64 * 0.3).round() as usize;
    assert_eq!(val.len(), n_val);
    assert_eq!([train, val].concat(), want);

    // More val tokens than the input holds is refused, and nothing is left behind.
    let out3 = lab.path("toolong");
    let e = lab.fails(&prepare_args(
        input,
        tok_s,
        out3.to_str().unwrap(),
        &["--text-field", "body", "--val-tokens", "100000000"],
    ));
    assert!(
        e.contains("too few to split with --val-tokens 100000000"),
        "{e}"
    );
    assert!(!out3.exists());
}

#[test]
fn a_vocabulary_of_65536_is_accepted() {
    let lab = Lab::new();
    let input = lab.write("t.txt", &TEXT.repeat(5));
    let out = lab.path("o");
    let stdout = lab.ok(&prepare_args(
        input.to_str().unwrap(),
        "train:65536",
        out.to_str().unwrap(),
        &[],
    ));
    assert!(stdout.contains("vocabulary"), "{stdout}");
    let e = lab.fails(&prepare_args(
        input.to_str().unwrap(),
        "train:65537",
        lab.path("o2").to_str().unwrap(),
        &[],
    ));
    assert!(e.contains("between 257 and 65,536"), "{e}");
}
