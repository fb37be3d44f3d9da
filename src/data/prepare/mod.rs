//! `stacklab data prepare`: text in, tokenizer and modded-nanogpt shards out, streaming.
//!
//! The text is tokenized with an existing `tokenizer.json` (GPT-2's, say) or a byte-level
//! BPE trained on the first `--train-sample-mb` of the input. Documents (text files, or the
//! lines of JSON-lines files) are joined with the tokenizer's `<|endoftext|>` token when it
//! has one. Files are read piece by piece, encoded on all cores and written to shards as
//! they fill, so memory stays bounded for any input size.
//!
//! The validation split is either the last `--val-fraction` of the token stream (the
//! default, 0.1: every token is first written to train shards, and once the total is known
//! the tail is moved into val shards, streaming) or, with `--val-tokens N`, the first N
//! tokens (decided without knowing the total). The output folder is built beside its
//! destination and renamed into place, so an interrupted run leaves nothing half-written;
//! `--force` replaces only a folder that holds a stacklab dataset and nothing else.

pub mod cut;
mod dataset;
pub mod encode;
pub mod input;
mod options;
pub mod shards;
mod swap;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokenizers::Tokenizer;

use dataset::last_fraction;
pub use dataset::{Dataset, DatasetInfo};
pub use encode::{can_chunk, train_bpe};
pub use input::{document_from_bytes, list_inputs, Document, Format, Source};
pub use options::{PrepareOptions, TokenizerSpec, ValSplit};
use shards::ShardWriter;

pub const EOT: &str = "<|endoftext|>";
pub const DATASET_FILE: &str = "dataset.toml";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Default bound on the text a BPE is trained on (`--train-sample-mb`).
pub const DEFAULT_TRAIN_SAMPLE_MB: u64 = 256;

/// Tokenizes the sources and writes the dataset folder `opts.out`.
pub fn prepare(sources: &[Source], opts: &PrepareOptions) -> Result<Dataset> {
    opts.check()?;
    let say = |msg: &str| {
        if opts.verbose && !opts.progress {
            eprintln!("{msg}");
        }
    };
    let (tokenizer, sample) = load_tokenizer(sources, opts)?;
    let vocab_size = tokenizer.get_vocab_size(true);
    if vocab_size > 65_536 {
        bail!("the tokenizer has {vocab_size} tokens; uint16 shards hold at most 65,536");
    }

    let (parent, name) = out_parts(&opts.out)?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let cleanup = TmpDir(tmp.clone());

    let mut train = ShardWriter::new(&tmp, "train", opts.shard_tokens);
    let mut val = ShardWriter::new(&tmp, "val", opts.shard_tokens);
    let total = tokenize(sources, opts, &tokenizer, &mut train, &mut val, &say)?;
    let split = split_val(&tmp, opts, total, train, val)?;
    say(&format!(
        "wrote {} train and {} val tokens",
        split.n_train, split.n_val
    ));

    tokenizer
        .save(tmp.join(TOKENIZER_FILE), false)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.join(TOKENIZER_FILE).display()))?;
    let info = DatasetInfo {
        tokenizer: TOKENIZER_FILE.into(),
        vocab_size,
        eot_token: tokenizer.token_to_id(EOT),
        train_tokens: split.n_train,
        val_tokens: split.n_val,
        train_shards: split.train_shards,
        val_shards: split.val_shards,
        sources: sources.iter().map(|x| x.name.clone()).collect(),
        val_fraction: split.val_fraction,
        val_split: match opts.val {
            ValSplit::LastFraction(_) => last_fraction(),
            ValSplit::FirstTokens(_) => "first_tokens".into(),
        },
        train_sample_mb: sample.map(|_| opts.train_sample_mb),
        train_sample_bytes: sample,
        created_at: chrono::Local::now().to_rfc3339(),
        stacklab_version: env!("CARGO_PKG_VERSION").into(),
    };
    crate::paths::write_atomic(
        &tmp.join(DATASET_FILE),
        toml::to_string_pretty(&info)?.as_bytes(),
    )?;
    swap::into_place(&tmp, &opts.out, opts.force)?;
    drop(cleanup);
    Dataset::open(&opts.out)
}

/// The tokenizer `opts` names, or a BPE trained on the sources (with the bytes of text it
/// was trained on).
fn load_tokenizer(sources: &[Source], opts: &PrepareOptions) -> Result<(Tokenizer, Option<u64>)> {
    match &opts.tokenizer {
        TokenizerSpec::File(p) => Tokenizer::from_file(p)
            .map(|t| (t, None))
            .map_err(|e| anyhow::anyhow!("{}: not a usable tokenizer.json: {e}", p.display())),
        TokenizerSpec::Train { vocab_size } => {
            if opts.verbose {
                eprintln!(
                    "training a byte-level BPE with vocabulary {vocab_size} on the first {} MB of text",
                    opts.train_sample_mb
                );
            }
            let (tok, used) =
                train_bpe(sources, &opts.text_field, *vocab_size, opts.sample_bytes())?;
            Ok((tok, Some(used)))
        }
    }
}

/// Encodes every source into `train` (the first `--val-tokens` into `val`); the tokens
/// written.
fn tokenize(
    sources: &[Source],
    opts: &PrepareOptions,
    tokenizer: &Tokenizer,
    train: &mut ShardWriter,
    val: &mut ShardWriter,
    say: &dyn Fn(&str),
) -> Result<usize> {
    let total_bytes: u64 = sources.iter().map(|s| s.size).sum();
    let bar = opts.progress.then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "tokenizing {bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid progress template"),
        );
        b
    });
    let cut = if can_chunk(tokenizer) {
        encode::PIECE
    } else {
        encode::WHOLE
    };
    let mut stream = input::TextStream::new(sources, cut, &opts.text_field);
    if let Some(b) = &bar {
        stream = stream.with_progress(b.clone());
    }
    say(&format!(
        "tokenizing {} file(s), {total_bytes} bytes, on {} threads",
        sources.len(),
        rayon::current_num_threads()
    ));
    let started = std::time::Instant::now();
    let names: Vec<String> = sources.iter().map(|x| x.name.clone()).collect();
    let total = encode::encode_stream(tokenizer, stream, &names, &mut |toks: &[u16]| {
        let mut toks = toks;
        if let ValSplit::FirstTokens(n) = opts.val {
            let to_val = n.saturating_sub(val.total()).min(toks.len());
            val.push(&toks[..to_val])?;
            toks = &toks[to_val..];
        }
        train.push(toks)
    })? as usize;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    say(&format!(
        "{total} tokens in {secs:.1} s ({:.0} tokens/s)",
        total as f64 / secs.max(1e-9)
    ));
    Ok(total)
}

/// The train and val shards once the split is made.
struct Split {
    train_shards: Vec<String>,
    n_train: usize,
    val_shards: Vec<String>,
    n_val: usize,
    val_fraction: f64,
}

/// Closes the shards; with `--val-fraction`, the tail of the train stream is moved into
/// val shards first.
fn split_val(
    tmp: &Path,
    opts: &PrepareOptions,
    total: usize,
    train: ShardWriter,
    mut val: ShardWriter,
) -> Result<Split> {
    let (train_shards, n_train) = train.finish()?;
    match opts.val {
        ValSplit::LastFraction(f) => {
            let n_val = ((total as f64) * f).round() as usize;
            if n_val == 0 || n_val == total {
                bail!("{total} tokens are too few to split with --val-fraction {f}");
            }
            let n_train = total - n_val;
            let train_shards =
                shards::move_tail(tmp, &train_shards, opts.shard_tokens, n_train, &mut val)?;
            let (val_shards, n_val) = val.finish()?;
            Ok(Split {
                train_shards,
                n_train,
                val_shards,
                n_val,
                val_fraction: f,
            })
        }
        ValSplit::FirstTokens(n) => {
            let (val_shards, got) = val.finish()?;
            if got < n || n_train == 0 {
                bail!("{total} tokens are too few to split with --val-tokens {n} (the first {n} tokens are the val split, the rest train)");
            }
            Ok(Split {
                train_shards,
                n_train,
                val_shards,
                n_val: got,
                val_fraction: got as f64 / total as f64,
            })
        }
    }
}

fn out_parts(out: &Path) -> Result<(PathBuf, String)> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = out
        .file_name()
        .with_context(|| format!("--out {}: not a folder name", out.display()))?
        .to_string_lossy()
        .into_owned();
    Ok((parent, name))
}

/// Removes a temporary folder when dropped (after a failure or a successful rename).
struct TmpDir(PathBuf);
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
