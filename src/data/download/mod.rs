//! `stacklab data download fineweb10B`: the GPT-2-tokenized FineWeb shards the seed's recipe
//! reads (modded-nanogpt's `data/cached_fineweb10B.py` set: `fineweb_val_000000.bin` and
//! `fineweb_train_000001.bin` ... `fineweb_train_000103.bin`, 100 M tokens each), fetched
//! in parallel into `data/fineweb10B/`, where `configs/gpt2-small-seed.toml` reads them.

mod attempt;
pub mod fetch;
pub mod http;
mod job;
pub mod part;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;

use fetch::{Job, Outcome};

/// The environment variable that overrides the default endpoint (a mirror).
pub const ENV_ENDPOINT: &str = "STACKLAB_DATA_ENDPOINT";

/// A downloadable shard set.
pub struct Known {
    pub name: &'static str,
    pub endpoint: &'static str,
    pub val: &'static str,
    /// `{i:06}` is the shard number, from 1.
    pub train_prefix: &'static str,
    pub max_train: usize,
    pub default_out: &'static str,
}

pub const FINEWEB10B: Known = Known {
    name: "fineweb10B",
    endpoint: "https://huggingface.co/datasets/kjj0/fineweb10B-gpt2/resolve/main",
    val: "fineweb_val_000000.bin",
    train_prefix: "fineweb_train_",
    max_train: 103,
    default_out: "data/fineweb10B",
};

pub const KNOWN: &[Known] = &[FINEWEB10B];

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The shard set: fineweb10B (GPT-2 tokens of FineWeb, modded-nanogpt's set).
    pub dataset: String,
    /// Train shards to fetch besides the val shard (100 M tokens each; 0 fetches only val).
    #[arg(long, default_value_t = 103)]
    pub shards: usize,
    /// Folder for the shards [default: data/fineweb10B, where configs/gpt2-small-seed.toml reads them].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Base URL of the files (a mirror) [default: $STACKLAB_DATA_ENDPOINT, else Hugging Face's kjj0/fineweb10B-gpt2].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Tries again after a broken transfer this many times per file (continuing it).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

/// Bytes and shards done, with an estimate of the total for the bar's ETA.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    files: usize,
    done: AtomicUsize,
    sized: Mutex<(u64, usize)>,
}

impl fetch::Progress for Bar {
    fn sized(&self, remaining: u64) {
        let mut s = self.sized.lock().unwrap();
        s.0 += remaining;
        s.1 += 1;
        if let Some(b) = &self.bar {
            // Files not started yet are counted at the mean size of those started.
            let left = self.files.saturating_sub(s.1) as u64;
            b.set_length(s.0 + left * (s.0 / s.1 as u64));
        }
    }
    fn advanced(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
}

impl Bar {
    fn finished(&self, line: String) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.bar {
            Some(b) => b.set_message(format!("shards {done}/{}", self.files)),
            None => eprintln!("{line}"),
        }
    }
}

impl Bar {
    /// A bar on a terminal when there is something to fetch, else a line per file.
    fn new(missing: usize) -> Bar {
        Bar {
            bar: (missing > 0 && std::io::stderr().is_terminal()).then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                    )
                    .expect("valid progress template"),
                );
                b.set_message(format!("shards 0/{missing}"));
                b
            }),
            files: missing,
            done: AtomicUsize::new(0),
            sized: Mutex::new((0, 0)),
        }
    }
}

pub fn run(a: &DownloadArgs) -> Result<()> {
    let set = known_set(a)?;
    let endpoint = endpoint(a, set)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(set.default_out));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let jobs = shard_jobs(set, a.shards, &endpoint, &out);
    let missing = jobs.iter().filter(|j| !j.dest.exists()).count();
    eprintln!(
        "{}: {} file(s) into {} ({} present, {missing} to fetch from {endpoint})",
        set.name,
        jobs.len(),
        out.display(),
        jobs.len() - missing
    );
    let bar = Bar::new(missing);
    let agent = http::agent(&endpoint)?;
    let started = std::time::Instant::now();
    let totals = fetch_all(&agent, &jobs, a, &bar);
    if let Some(b) = &bar.bar {
        b.finish_and_clear();
    }
    if let Some(first) = first_failure(totals.errors) {
        bail!(
            "{first:#}\n{} of {} file(s) not downloaded; running the same command again continues where it stopped",
            jobs.iter().filter(|j| !j.dest.exists()).count(),
            jobs.len()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {} file(s), {} tokens in {} ({} MB fetched in {secs:.1} s)",
        set.name,
        jobs.len(),
        totals.tokens,
        out.display(),
        totals.bytes / 1_000_000
    );
    print_next_step(set, a.out.is_none(), &out);
    Ok(())
}

/// The shard set `a` names, with its shard count and jobs checked.
fn known_set(a: &DownloadArgs) -> Result<&'static Known> {
    let Some(set) = KNOWN
        .iter()
        .find(|k| k.name.eq_ignore_ascii_case(&a.dataset))
    else {
        bail!(
            "unknown dataset `{}`: expected one of {}",
            a.dataset,
            KNOWN.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        );
    };
    if a.shards > set.max_train {
        bail!(
            "--shards {}: {} has {} train shards",
            a.shards,
            set.name,
            set.max_train
        );
    }
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    Ok(set)
}

/// `--endpoint`, else `$STACKLAB_DATA_ENDPOINT`, else the set's own; an http(s) URL.
fn endpoint(a: &DownloadArgs, set: &Known) -> Result<String> {
    let endpoint = a
        .endpoint
        .clone()
        .or_else(|| std::env::var(ENV_ENDPOINT).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| set.endpoint.to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        bail!("--endpoint {endpoint}: expected an http:// or https:// URL");
    }
    Ok(endpoint)
}

/// The val shard and the first `shards` train shards, each from `endpoint` into `out`.
fn shard_jobs(set: &Known, shards: usize, endpoint: &str, out: &std::path::Path) -> Vec<Job> {
    std::iter::once(set.val.to_string())
        .chain((1..=shards).map(|i| format!("{}{i:06}.bin", set.train_prefix)))
        .map(|n| Job {
            url: format!("{endpoint}/{n}"),
            dest: out.join(&n),
            name: n,
        })
        .collect()
}

/// What the workers did: tokens in all files, bytes fetched, and each failure by the
/// index of its file.
struct Totals {
    tokens: u64,
    bytes: u64,
    errors: Vec<(usize, anyhow::Error)>,
}

/// Fetches `jobs` with `a.jobs` workers; the first failure stops the others.
fn fetch_all(agent: &ureq::Agent, jobs: &[Job], a: &DownloadArgs, bar: &Bar) -> Totals {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let tokens = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let errors: Mutex<Vec<(usize, anyhow::Error)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..a.jobs.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() || stop.load(Ordering::Relaxed) {
                    return;
                }
                let job = &jobs[i];
                match fetch::fetch(agent, job, a.retries, &stop, bar) {
                    Ok(Outcome::Present(n)) => {
                        tokens.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(Outcome::Fetched {
                        tokens: n,
                        bytes: b,
                    }) => {
                        tokens.fetch_add(n as u64, Ordering::Relaxed);
                        bytes.fetch_add(b, Ordering::Relaxed);
                        bar.finished(format!("{}  {n} tokens", job.name));
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        errors.lock().unwrap().push((i, e));
                    }
                }
            });
        }
    });
    Totals {
        tokens: tokens.into_inner(),
        bytes: bytes.into_inner(),
        errors: errors.into_inner().unwrap(),
    }
}

/// The failure to report: files stopped because another failed say so; the first real
/// failure is the news.
fn first_failure(mut errors: Vec<(usize, anyhow::Error)>) -> Option<anyhow::Error> {
    if errors.is_empty() {
        return None;
    }
    errors.sort_by_key(|(i, _)| *i);
    let real = errors
        .iter()
        .position(|(_, e)| !format!("{e:#}").contains("stopped after another file failed"))
        .unwrap_or(0);
    Some(errors.swap_remove(real).1)
}

/// How to train on what was fetched: the seed's config reads the default folder.
fn print_next_step(set: &Known, default_out: bool, out: &std::path::Path) {
    if default_out {
        println!("configs/gpt2-small-seed.toml reads them (data.train = \"data/fineweb10B/fineweb_train_*.bin\") when run from this folder");
    } else {
        println!(
            "train on them with --set 'data.train=\"{}/{}*.bin\"' --set 'data.val=\"{}/{}\"'",
            out.display(),
            set.train_prefix,
            out.display(),
            set.val
        );
    }
}
