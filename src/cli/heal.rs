//! `stacklab heal`: the flags, then `heal::run` (the arms trained as child runs), the table
//! printed (or the report as JSON) and the outputs written into the heal folder.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::selection::StackSelectionArgs;
use crate::heal::{Arm, HealOptions};

#[derive(Debug, Args)]
pub struct HealArgs {
    #[command(flatten)]
    pub sel: StackSelectionArgs,
    /// Training steps of every arm (a multiple of 4).
    #[arg(long)]
    pub steps: i64,
    /// The recipe (a config file or name); default: the first part's own config.
    #[arg(long)]
    pub config: Option<String>,
    /// Override a recipe key, e.g. --set optimizer.muon.lr=0.002 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The arms, comma-separated: stack, self, scratch, continue.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stack,self,scratch,continue"
    )]
    pub arms: Vec<String>,
    /// Train the shared embedding/head `W` too (default: frozen, as the parts had it).
    #[arg(long)]
    pub train_w: bool,
    /// The heal's name: its arms are the runs NAME-stack, NAME-self, ...; default
    /// heal-<date>-<time>.
    #[arg(long)]
    pub name: Option<String>,
    /// The heal's folder; default heals/<name>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: HealArgs) -> Result<()> {
    let arms = a
        .arms
        .iter()
        .map(|s| s.parse::<Arm>().map_err(|e| e.context("--arms")))
        .collect::<Result<Vec<_>>>()?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("heal-{}", chrono::Local::now().format("%Y%m%d-%H%M%S")));
    let device = a.sel.device.resolve()?;
    let o = HealOptions {
        spec: a.sel.spec()?,
        eval: a.sel.eval()?,
        steps: a.steps,
        config: a.config.clone(),
        sets: a.set.clone(),
        arms,
        train_w: a.train_w,
        out: a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("heals").join(&name)),
        name,
        device: crate::device::name(device),
        runs_root: None,
    };
    let report = crate::heal::run(&o)?;
    let files = crate::heal::write_outputs(&report, &o.out)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", crate::heal::table(&report));
    }
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
