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
