//! `stacklab data ...`: prepare shards from text, download FineWeb shards, the embedded
//! corpus, shard info.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::download::DownloadArgs;
use super::prepare::{self, PrepareOptions, TokenizerSpec, ValSplit};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Tokenize text (.txt, .jsonl, either .gz, or a folder of them) into train/val shards.
    Prepare(PrepareArgs),
    /// Download GPT-2-tokenized FineWeb shards (the seed's recipe's data).
    Download(DownloadArgs),
    /// Prepare the embedded corpus if needed and print where it is.
    Embedded,
    /// Check shards and print their token counts.
    Info {
        /// A shard file or glob, e.g. 'data/fineweb10B/fineweb_val_*.bin'.
        glob: String,
    },
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// A .txt or .jsonl file (optionally .gz), or a folder of them (read in sorted order).
    #[arg(long)]
    pub input: PathBuf,
    /// A tokenizer.json (e.g. GPT-2's), or train:VOCAB for a byte-level BPE trained on the input.
    #[arg(long)]
    pub tokenizer: String,
    /// Output folder for the shards, tokenizer.json and dataset.toml.
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of the tokens (at the end) that become the validation split.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Instead of --val-fraction: the first N tokens become the validation split.
    #[arg(long, conflicts_with = "val_fraction")]
    pub val_tokens: Option<usize>,
    /// Tokens per shard file.
    #[arg(long, default_value_t = 100_000_000)]
    pub shard_tokens: usize,
    /// The JSON field that holds each document's text in .jsonl files.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// With train:VOCAB, train the BPE on the first this many MB of text.
    #[arg(long, default_value_t = prepare::DEFAULT_TRAIN_SAMPLE_MB)]
    pub train_sample_mb: u64,
    /// Replace an existing dataset in --out.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Prepare(a) => {
            let spec: TokenizerSpec = a.tokenizer.parse()?;
            let sources = prepare::list_inputs(&a.input)?;
            let mut opts = PrepareOptions::new(spec, a.out.clone());
            opts.val = match a.val_tokens {
                Some(n) => ValSplit::FirstTokens(n),
                None => ValSplit::LastFraction(a.val_fraction),
            };
            opts.shard_tokens = a.shard_tokens;
            opts.text_field = a.text_field;
            opts.train_sample_mb = a.train_sample_mb;
            opts.force = a.force;
            opts.progress = std::io::stderr().is_terminal();
            opts.verbose = true;
            let ds = prepare::prepare(&sources, &opts)?;
            print_dataset(&ds);
            Ok(())
        }
        DataCommand::Download(a) => super::download::run(&a),
        DataCommand::Embedded => {
            let ds = super::embedded::ensure_prepared()?;
            print_dataset(&ds);
            Ok(())
        }
        DataCommand::Info { glob } => {
            let files = super::expand_glob(&glob)?;
            let mut total = 0usize;
            for f in &files {
                let shard = super::Shard::open(f)?;
                total += shard.len();
                println!(
                    "{}  {} tokens  max id {}",
                    f.display(),
                    shard.len(),
                    shard
                        .max_token()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
            println!("{} shard(s), {total} tokens", files.len());
            Ok(())
        }
    }
}

fn print_dataset(ds: &prepare::Dataset) {
    let i = &ds.info;
    println!("dataset      {}", ds.dir.display());
    println!(
        "tokenizer    {} (vocabulary {})",
        ds.tokenizer_path().display(),
        i.vocab_size
    );
    println!(
        "train        {} tokens in {} shard(s): {}",
        i.train_tokens,
        i.train_shards.len(),
        ds.train_glob()
    );
    println!(
        "val          {} tokens in {} shard(s): {}",
        i.val_tokens,
        i.val_shards.len(),
        ds.val_glob()
    );
}
