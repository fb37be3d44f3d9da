//! `stacklab data prepare`: text in, tokenizer and modded-nanogpt shards out.
//!
//! The text is tokenized with an existing `tokenizer.json` (GPT-2's, say) or a byte-level
//! BPE trained on the input. Documents (input files) are joined with the tokenizer's
//! `<|endoftext|>` token when it has one. The first `1 - val_fraction` of the token stream
//! becomes the train shards, the rest the val shards. The output folder is built beside its
//! destination and renamed into place, so an interrupted run leaves nothing half-written.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::shard;

pub const EOT: &str = "<|endoftext|>";
pub const DATASET_FILE: &str = "dataset.toml";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Which tokenizer to use: `FILE.json` or `train:VOCAB`.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSpec {
    File(PathBuf),
    Train { vocab_size: usize },
}

impl std::str::FromStr for TokenizerSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(v) = s.strip_prefix("train:") {
            let vocab_size: usize = v
                .parse()
                .with_context(|| format!("--tokenizer {s}: `{v}` is not a vocabulary size"))?;
            if !(257..=65_535).contains(&vocab_size) {
                bail!("--tokenizer {s}: vocabulary must be between 257 and 65,535 (uint16 shards)");
            }
            return Ok(TokenizerSpec::Train { vocab_size });
        }
        let p = PathBuf::from(s);
        if !p.is_file() {
            bail!("--tokenizer {s}: no such file (expected a tokenizer.json or train:VOCAB)");
        }
        Ok(TokenizerSpec::File(p))
    }
}

/// One input document.
#[derive(Debug, Clone)]
pub struct Document {
    pub name: String,
    pub text: String,
}

fn decode_utf8(bytes: Vec<u8>, name: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{name}: not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads text from `bytes` that may be gzip-compressed.
pub fn document_from_bytes(name: &str, bytes: &[u8]) -> Result<Document> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .with_context(|| format!("{name}: not a valid gzip file"))?;
        out
    } else {
        bytes.to_vec()
    };
    Ok(Document {
        name: name.to_string(),
        text: decode_utf8(raw, name)?,
    })
}

fn is_text_file(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    n.ends_with(".txt") || n.ends_with(".txt.gz")
}

/// The documents of `--input`: one `.txt`/`.txt.gz` file, or every such file in a folder
/// (sorted by name, searched recursively).
pub fn read_input(path: &Path) -> Result<Vec<Document>> {
    let files = if path.is_dir() {
        let mut files = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in
                std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
            {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if is_text_file(&p) {
                    files.push(p);
                }
            }
        }
        files.sort();
        if files.is_empty() {
            bail!(
                "--input {}: the folder holds no .txt or .txt.gz files",
                path.display()
            );
        }
        files
    } else if path.is_file() {
        if !is_text_file(path) {
            bail!(
                "--input {}: expected a .txt or .txt.gz file, or a folder of them",
                path.display()
            );
        }
        vec![path.to_path_buf()]
    } else {
        bail!("--input {}: no such file or folder", path.display());
    };
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            document_from_bytes(&f.display().to_string(), &bytes)
        })
        .collect()
}

/// Trains a GPT-2-style byte-level BPE (with `<|endoftext|>` as token 0) on the documents.
pub fn train_bpe(docs: &[Document], vocab_size: usize) -> Result<Tokenizer> {
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(byte_level));
    tokenizer.with_post_processor(Some(byte_level));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let chunks: Vec<&str> = docs
        .iter()
        .flat_map(|d| safe_chunks(&d.text, 1 << 20))
        .collect();
    tokenizer
        .train(&mut trainer, chunks.into_iter())
        .map_err(|e| anyhow::anyhow!("training the BPE tokenizer failed: {e}"))?;
    Ok(tokenizer)
}

/// Splits text into pieces of about `target` bytes at places where a byte-level (GPT-2
/// regex) pre-tokenizer always splits: just before a newline that is followed by a
/// non-whitespace character. Encoding the pieces gives exactly the tokens of the whole text.
pub fn safe_chunks(text: &str, target: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    while text.len() - start > target {
        let mut cut = None;
        let mut p = start + target;
        while p < bytes.len() {
            if bytes[p] == b'\n' && p > start {
                if let Some(c) = text[p + 1..].chars().next() {
                    if !c.is_whitespace() {
                        cut = Some(p);
                        break;
                    }
                }
            }
            p += 1;
        }
        match cut {
            Some(c) => {
                out.push(&text[start..c]);
                start = c;
            }
            None => break,
        }
    }
    out.push(&text[start..]);
    out
}

/// Whether chunked encoding equals whole-text encoding for this tokenizer (true for a
/// byte-level pre-tokenizer with the GPT-2 regex); otherwise documents are encoded whole.
fn can_chunk(tokenizer: &Tokenizer) -> bool {
    let json = match tokenizer.to_string(false) {
        Ok(j) => j,
        Err(_) => return false,
    };
    let v: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(_) => return false,
    };
    let pt = &v["pre_tokenizer"];
    pt["type"] == "ByteLevel" && pt["use_regex"] != false && v["normalizer"].is_null()
}

/// Encodes documents into one token stream, `<|endoftext|>` between documents.
pub fn encode_documents(
    tokenizer: &Tokenizer,
    docs: &[Document],
    progress: &dyn Fn(usize),
) -> Result<Vec<u16>> {
    let eot = tokenizer.token_to_id(EOT);
    let chunked = can_chunk(tokenizer);
    let mut out: Vec<u16> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            if let Some(e) = eot {
                out.push(to_u16(e)?);
            }
        }
        let pieces = if chunked {
            safe_chunks(&doc.text, 256 << 10)
        } else {
            vec![doc.text.as_str()]
        };
        for group in pieces.chunks(16) {
            let encodings = tokenizer
                .encode_batch(group.to_vec(), false)
                .map_err(|e| anyhow::anyhow!("{}: tokenizing failed: {e}", doc.name))?;
            for enc in encodings {
                for &id in enc.get_ids() {
                    out.push(to_u16(id)?);
                }
            }
            progress(group.iter().map(|p| p.len()).sum());
        }
    }
    Ok(out)
}

fn to_u16(id: u32) -> Result<u16> {
    u16::try_from(id).map_err(|_| {
        anyhow::anyhow!("token id {id} does not fit the uint16 shard format (at most 65,535)")
    })
}

/// The summary written beside the shards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    pub tokenizer: String,
    pub vocab_size: usize,
    pub eot_token: Option<u32>,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub train_shards: Vec<String>,
    pub val_shards: Vec<String>,
    pub sources: Vec<String>,
    pub val_fraction: f64,
    pub created_at: String,
    pub stacklab_version: String,
}

/// A prepared dataset folder.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub info: DatasetInfo,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset> {
        let p = dir.join(DATASET_FILE);
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let info = toml::from_str(&text)
            .with_context(|| format!("{}: not a stacklab dataset summary", p.display()))?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            info,
        })
    }
    pub fn train_glob(&self) -> String {
        self.dir.join("train_*.bin").display().to_string()
    }
    pub fn val_glob(&self) -> String {
        self.dir.join("val_*.bin").display().to_string()
    }
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(&self.info.tokenizer)
    }
}

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub tokenizer: TokenizerSpec,
    pub out: PathBuf,
    pub val_fraction: f64,
    pub shard_tokens: usize,
    /// Replace an existing dataset in `out`.
    pub force: bool,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Print one line per phase (when not showing a bar).
    pub verbose: bool,
}

impl PrepareOptions {
    pub fn new(tokenizer: TokenizerSpec, out: PathBuf) -> Self {
        PrepareOptions {
            tokenizer,
            out,
            val_fraction: 0.1,
            shard_tokens: 100_000_000,
            force: false,
            progress: false,
            verbose: false,
        }
    }
}

/// Tokenizes `docs` and writes the dataset folder `opts.out`.
pub fn prepare(docs: &[Document], opts: &PrepareOptions) -> Result<Dataset> {
    if !(opts.val_fraction > 0.0 && opts.val_fraction < 1.0) {
        bail!(
            "--val-fraction {}: expected a number between 0 and 1 (exclusive)",
            opts.val_fraction
        );
    }
    if opts.shard_tokens == 0 {
        bail!("--shard-tokens must be at least 1");
    }
    if opts.out.join(DATASET_FILE).exists() && !opts.force {
        bail!(
            "{} already holds a dataset; pass --force to replace it",
            opts.out.display()
        );
    }
    if opts.out.exists() && !opts.out.is_dir() {
        bail!("--out {}: exists and is not a folder", opts.out.display());
    }
    if opts.out.is_dir() && !opts.force && std::fs::read_dir(&opts.out)?.next().is_some() {
        bail!(
            "--out {}: the folder is not empty; pass --force to replace its contents",
            opts.out.display()
        );
    }
    let say = |msg: &str| {
        if opts.verbose && !opts.progress {
            eprintln!("{msg}");
        }
    };

    let tokenizer = match &opts.tokenizer {
        TokenizerSpec::File(p) => Tokenizer::from_file(p)
            .map_err(|e| anyhow::anyhow!("{}: not a usable tokenizer.json: {e}", p.display()))?,
        TokenizerSpec::Train { vocab_size } => {
            say(&format!(
                "training a byte-level BPE with vocabulary {vocab_size}"
            ));
            train_bpe(docs, *vocab_size)?
        }
    };
    let vocab_size = tokenizer.get_vocab_size(true);
    if vocab_size > 65_536 {
        bail!("the tokenizer has {vocab_size} tokens; uint16 shards hold at most 65,536");
    }

    let total_bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(total_bytes as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "tokenizing {bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid progress template"),
        );
        Some(b)
    } else {
        None
    };
    say(&format!(
        "tokenizing {} document(s), {total_bytes} bytes",
        docs.len()
    ));
    let tokens = encode_documents(&tokenizer, docs, &|n| {
        if let Some(b) = &bar {
            b.inc(n as u64)
        }
    })?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let n_val = ((tokens.len() as f64) * opts.val_fraction).round() as usize;
    let n_train = tokens.len() - n_val;
    if n_val == 0 || n_train == 0 {
        bail!(
            "{} tokens are too few to split with --val-fraction {}",
            tokens.len(),
            opts.val_fraction
        );
    }

    let parent = opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = opts
        .out
        .file_name()
        .with_context(|| format!("--out {}: not a folder name", opts.out.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let cleanup = scopeguard(tmp.clone());

    let write_split = |prefix: &str, toks: &[u16]| -> Result<Vec<String>> {
        let mut names = Vec::new();
        for (i, piece) in toks.chunks(opts.shard_tokens).enumerate() {
            let n = format!("{prefix}_{i:06}.bin");
            shard::write(&tmp.join(&n), piece)?;
            names.push(n);
        }
        Ok(names)
    };
    say(&format!("writing {n_train} train and {n_val} val tokens"));
    let train_shards = write_split("train", &tokens[..n_train])?;
    let val_shards = write_split("val", &tokens[n_train..])?;
    tokenizer
        .save(tmp.join(TOKENIZER_FILE), false)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.join(TOKENIZER_FILE).display()))?;
    let info = DatasetInfo {
        tokenizer: TOKENIZER_FILE.into(),
        vocab_size,
        eot_token: tokenizer.token_to_id(EOT),
        train_tokens: n_train,
        val_tokens: n_val,
        train_shards,
        val_shards,
        sources: docs.iter().map(|d| d.name.clone()).collect(),
        val_fraction: opts.val_fraction,
        created_at: chrono::Local::now().to_rfc3339(),
        stacklab_version: env!("CARGO_PKG_VERSION").into(),
    };
    crate::paths::write_atomic(
        &tmp.join(DATASET_FILE),
        toml::to_string_pretty(&info)?.as_bytes(),
    )?;

    // Swap the finished folder into place.
    if opts.out.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(&opts.out, &old)
            .with_context(|| format!("cannot move the old {} aside", opts.out.display()))?;
        std::fs::rename(&tmp, &opts.out)
            .with_context(|| format!("cannot create {}", opts.out.display()))?;
        let _ = std::fs::remove_dir_all(&old);
    } else if let Err(e) = std::fs::rename(&tmp, &opts.out) {
        // Another process may have finished the same folder first.
        if !opts.out.join(DATASET_FILE).exists() {
            return Err(e).with_context(|| format!("cannot create {}", opts.out.display()));
        }
    }
    drop(cleanup);
    Dataset::open(&opts.out)
}

/// Removes a temporary folder when dropped (after a failure or a successful rename).
struct TmpDir(PathBuf);
fn scopeguard(p: PathBuf) -> TmpDir {
    TmpDir(p)
}
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_chunks_cover_the_text_and_cut_before_a_newline() {
        let text = "line one\nline two\n\n  indented\nthird\n".repeat(50);
        let chunks = safe_chunks(&text, 37);
        assert!(chunks.len() > 5);
        assert_eq!(chunks.concat(), text);
        for c in &chunks[1..] {
            assert!(c.starts_with('\n'), "{c:?}");
            assert!(!c[1..].starts_with(char::is_whitespace), "{c:?}");
        }
    }

    #[test]
    fn tokenizer_spec_parses_and_refuses() {
        assert_eq!(
            "train:512".parse::<TokenizerSpec>().unwrap(),
            TokenizerSpec::Train { vocab_size: 512 }
        );
        let e = "train:70000"
            .parse::<TokenizerSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 257 and 65,535"), "{e}");
        let e = "nope.json"
            .parse::<TokenizerSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.json: no such file"), "{e}");
    }
}
