//! One stack's row of `results.csv`: the stack evaluated as a child `stacklab stack --json`
//! (a typed [`StackRequest`]), its typed report joined with the sweep's keys, and the row
//! appended under the file's lock, superseding the stack's earlier rows.

use std::path::Path;

use anyhow::{bail, Result};

use crate::jobs::request::{StackRequest, StackSelection};
use crate::jobs::spawn::{self, Spec};
use crate::stack::results::StackReport;
use crate::stack::row::ResultsRow;
use crate::stack::{EvalOptions, Layers, StackNorms, StackSpec};
use crate::sweep::config::SweepConfig;
use crate::sweep::plan::config_hash;
use crate::sweep::plan::{Plan, PlannedRun, PlannedStack};

/// The stack, evaluation settings and device of one planned stack.
pub(super) fn stack_selection(
    s: &PlannedStack,
    cfg: &SweepConfig,
    device: &str,
) -> Result<StackSelection> {
    let e = &cfg.eval;
    let eval = EvalOptions {
        data: (!e.data.is_empty()).then(|| e.data.clone()),
        tokens: (e.tokens > 0).then_some(e.tokens),
        seq_len: e.seq_len,
        batch: e.batch,
        ..EvalOptions::default()
    };
    Ok(match &s.spec {
        Some(p) => StackSelection {
            spec: StackSpec::load(p)?,
            spec_file: Some(p.clone()),
            eval,
            device: device.to_string(),
        },
        None => StackSelection::of(
            StackSpec {
                models: s.dirs.iter().map(|d| d.display().to_string()).collect(),
                layers: Layers::Flags {
                    use_first_layer: s.use_first_layer == Some(true),
                    use_last_layer: s.use_last_layer == Some(true),
                },
                norms: StackNorms {
                    norm_wte: s.norms.norm_wte,
                    norm_lm_head: s.norms.norm_lm_head,
                    norm_inter_model: s.norms.norm_inter_model,
                },
                sha256: vec![None; s.dirs.len()],
            },
            eval,
            device,
        ),
    })
}

/// The request that evaluates one planned stack.
pub(super) fn stack_request(
    s: &PlannedStack,
    cfg: &SweepConfig,
    device: &str,
) -> Result<StackRequest> {
    Ok(StackRequest {
        selection: stack_selection(s, cfg, device)?,
        results: None,
        save: None,
        no_cache: false,
    })
}

/// Evaluates one planned stack in a child and returns its row.
pub(super) fn stack_row(
    s: &PlannedStack,
    cfg: &SweepConfig,
    plan: &Plan,
    device: &str,
) -> Result<ResultsRow> {
    let args = stack_request(s, cfg, device)?.to_args();
    let log = plan.out.join("logs").join("stacks.log");
    let exe = spawn::stacklab_exe()?;
    let out = spawn::run_for_output(
        &Spec {
            program: &exe,
            args: &args,
            env: &[],
        },
        &log,
    )?;
    if spawn::interrupted(&out.status) {
        bail!(
            "interrupted while evaluating {}; run the same sweep again to resume",
            s.describe()
        );
    }
    if !out.status.success() {
        bail!("evaluating {} failed (see {})", s.describe(), log.display());
    }
    let report: StackReport = crate::jobs::decode_report(
        &String::from_utf8_lossy(&out.stdout),
        &format!("stack for {}", s.describe()),
    )?;
    Ok(sweep_row(s, cfg, plan, &report))
}

/// The report's row with the sweep's keys: the stack's id, the sweep, the replicate, its
/// models as the sweep names them, their seeds, training configs and COCONUT settings.
pub(super) fn sweep_row(
    s: &PlannedStack,
    cfg: &SweepConfig,
    plan: &Plan,
    report: &StackReport,
) -> ResultsRow {
    let runs: Vec<&PlannedRun> = s
        .models
        .iter()
        .map(|m| {
            plan.runs
                .iter()
                .find(|r| Some(r.replicate) == s.replicate && &r.model == m)
                .expect("planned")
        })
        .collect();
    let join = |it: Vec<String>| it.join(";");
    let same = |v: Vec<String>| -> String {
        match v.first() {
            Some(first) if v.iter().all(|x| x == first) => first.clone(),
            _ => v.join(";"),
        }
    };
    let every: Vec<String> = runs
        .iter()
        .map(|r| r.config.coconut.every.to_string())
        .collect();
    let modes: Vec<String> = runs
        .iter()
        .map(|r| {
            if r.config.coconut.every > 0 {
                r.config.coconut.mode.as_str().to_string()
            } else {
                String::new()
            }
        })
        .collect();
    ResultsRow {
        stack_id: s.id.clone(),
        sweep: cfg.name.clone(),
        replicate: s.replicate.map(|r| r as i64),
        models: match &s.spec {
            // A spec's stack is the spec: its rows never pool with another spec's.
            Some(p) => format!(
                "spec {}",
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            None => join(s.models.clone()),
        },
        seeds: join(runs.iter().map(|r| r.seed.to_string()).collect()),
        coconut_every: if runs.is_empty() {
            String::new()
        } else {
            same(every)
        },
        coconut_mode: if runs.is_empty() {
            String::new()
        } else {
            same(modes)
        },
        config_sha256: join(runs.iter().map(|r| config_hash(&r.config)).collect()),
        created_at: chrono::Local::now().to_rfc3339(),
        superseded: Some(false),
        ..ResultsRow::of_report(report)
    }
}

/// Appends one row under the file's lock, marking the rows it replaces (the same
/// `stack_id`) superseded. A file with an older header is rewritten with today's columns
/// (the new ones empty in old rows) through a temporary and a rename, so an interrupted
/// sweep never leaves half a row; a file that cannot be read is an error, never taken as
/// empty.
pub(super) fn append_row(path: &Path, row: &ResultsRow) -> Result<()> {
    row.append_superseding(path)
}
