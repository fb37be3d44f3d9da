//! `stacklab stack`: the flags, then the library's work (resolve and check the stack before
//! computing anything, score it beside its parts: `stack::score`), the report printed, and
//! optionally the spec, the stack and a results row saved.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::selection::StackSelectionArgs;
use crate::stack::row::ResultsRow;
use crate::stack::score::{check_save_target, score, ScoreOptions};
use crate::stack::selection::prepare;

#[derive(Debug, Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub sel: StackSelectionArgs,
    /// Write the stack's spec (resolved paths, sha256 of each model) to a TOML file.
    #[arg(long, value_name = "FILE")]
    pub save_spec: Option<PathBuf>,
    /// Save the stack as a checkpoint folder that eval, stack and init_from load.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Append the result as one row of a CSV file (header written when new).
    #[arg(long, value_name = "FILE.csv")]
    pub results: Option<PathBuf>,
    /// One JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Recompute every model's own loss instead of reading it from the cache.
    #[arg(long)]
    pub no_cache: bool,
}

pub fn run(a: StackArgs) -> Result<()> {
    let started = Instant::now();
    let device = a.sel.device.resolve()?;
    let (spec, eval) = (a.sel.spec()?, a.sel.eval()?);
    if let Some(dir) = &a.save {
        check_save_target(dir)?;
    }
    if let Some(p) = &a.results {
        ResultsRow::check_file(p).context("--results")?;
    }
    let prepared = prepare(&spec, &eval, device)?;
    for w in &prepared.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(p) = &a.save_spec {
        crate::paths::write_atomic(p, prepared.resolved_spec().to_toml_string().as_bytes())
            .context("--save-spec")?;
    }
    let opts = ScoreOptions {
        no_cache: a.no_cache,
        save: a.save.clone(),
    };
    let mut progress = crate::progress::for_command();
    let report = score(&prepared, &eval, &opts, device, progress.as_mut(), started)?;
    if let Some(p) = &a.results {
        ResultsRow::of_report(&report)
            .append(p)
            .context("--results")?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}
