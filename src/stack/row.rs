//! The one results row: what `stack --results` appends, what the lab's `stacks.csv` holds
//! and what a sweep's `results.csv` holds, written and read with the `csv` crate by column
//! name. A stack's own columns come first (a file `stack` wrote before the sweep's keys
//! joined them is a prefix of today's header); the sweep's keys follow, empty in a row that
//! no sweep wrote. Lists are joined with `;`.
//!
//! A file with an older header (fewer of these columns, in any order) is read by name and
//! rewritten with today's header the next time a row is appended; a file with a column
//! that is not one of these is not a results file and is refused.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::results::StackReport;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResultsRow {
    pub created_at: String,
    pub val_loss_stack: f64,
    pub val_losses: String,
    pub mean_val_loss: f64,
    pub delta_vs_best: f64,
    pub use_first_layer: Option<bool>,
    pub use_last_layer: Option<bool>,
    pub norm_wte: String,
    pub norm_lm_head: String,
    pub norm_inter_model: String,
    pub unique_model: Option<bool>,
    pub block_list: String,
    pub n_blocks: Option<i64>,
    pub attn_scales: String,
    /// The parts' names: checkpoint names from `stack`, the sweep's model names in a sweep.
    pub models: String,
    /// The parts' checkpoint paths, bottom first.
    pub paths: String,
    pub sha256: String,
    /// `start:end` per part.
    pub ranges: String,
    pub trained_norm_wte: String,
    pub trained_norm_lm_head: String,
    pub data: String,
    pub tokens: Option<i64>,
    pub seq_len: Option<i64>,
    pub batch: Option<i64>,
    pub device: String,
    /// Joined with ` | `.
    pub warnings: String,
    pub saved: String,
    pub seconds: Option<f64>,
    // The sweep's keys.
    pub stack_id: String,
    pub sweep: String,
    pub replicate: Option<i64>,
    pub seeds: String,
    /// `norm_wte/norm_lm_head` each part was trained with.
    pub training_norms: String,
    pub coconut_every: String,
    pub coconut_mode: String,
    /// Whether a part was trained with other outer norms than the stack uses.
    pub norm_mismatch: Option<bool>,
    /// The parts' checkpoint paths (the sweep's name for `paths`).
    pub checkpoints: String,
    pub model_ids: String,
    pub config_sha256: String,
    /// A row computed from checkpoints since retrained: kept, left out of the tables.
    pub superseded: Option<bool>,
}

/// The columns, in order (the fields' names).
pub const COLUMNS: [&str; 40] = [
    "created_at",
    "val_loss_stack",
    "val_losses",
    "mean_val_loss",
    "delta_vs_best",
    "use_first_layer",
    "use_last_layer",
    "norm_wte",
    "norm_lm_head",
    "norm_inter_model",
    "unique_model",
    "block_list",
    "n_blocks",
    "attn_scales",
    "models",
    "paths",
    "sha256",
    "ranges",
    "trained_norm_wte",
    "trained_norm_lm_head",
    "data",
    "tokens",
    "seq_len",
    "batch",
    "device",
    "warnings",
    "saved",
    "seconds",
    "stack_id",
    "sweep",
    "replicate",
    "seeds",
    "training_norms",
    "coconut_every",
    "coconut_mode",
    "norm_mismatch",
    "checkpoints",
    "model_ids",
    "config_sha256",
    "superseded",
];

/// The columns a results file must have.
const REQUIRED: [&str; 3] = ["val_loss_stack", "mean_val_loss", "delta_vs_best"];

fn join<T: ToString>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(";")
}

impl ResultsRow {
    /// A stack's result as a row (the sweep's keys empty).
    pub fn of_report(r: &StackReport) -> ResultsRow {
        let norm =
            |n: Option<crate::config::NormKind>| n.map(|n| n.to_string()).unwrap_or_default();
        let m = &r.models;
        let paths = join(m.iter().map(|m| m.path.clone()));
        ResultsRow {
            created_at: r.created_at.clone(),
            val_loss_stack: r.val_loss_stack,
            val_losses: join(&r.val_losses),
            mean_val_loss: r.mean_val_loss,
            delta_vs_best: r.delta_vs_best,
            use_first_layer: r.use_first_layer,
            use_last_layer: r.use_last_layer,
            norm_wte: r.norm_wte.to_string(),
            norm_lm_head: r.norm_lm_head.to_string(),
            norm_inter_model: r.norm_inter_model.to_string(),
            unique_model: Some(r.unique_model),
            block_list: r.block_list.clone(),
            n_blocks: Some(r.blocks.len() as i64),
            attn_scales: join(r.blocks.iter().map(|b| b.attn_scale)),
            models: join(m.iter().map(|m| m.name.clone())),
            checkpoints: paths.clone(),
            paths,
            sha256: join(m.iter().map(|m| m.sha256.clone())),
            ranges: join(m.iter().map(|m| format!("{}:{}", m.start, m.end))),
            trained_norm_wte: join(m.iter().map(|m| norm(m.trained_norm_wte))),
            trained_norm_lm_head: join(m.iter().map(|m| norm(m.trained_norm_lm_head))),
            training_norms: join(m.iter().map(|m| {
                format!(
                    "{}/{}",
                    norm(m.trained_norm_wte),
                    norm(m.trained_norm_lm_head)
                )
            })),
            norm_mismatch: Some(m.iter().any(|m| {
                m.trained_norm_wte.is_some_and(|w| w != r.norm_wte)
                    || m.trained_norm_lm_head.is_some_and(|h| h != r.norm_lm_head)
            })),
            model_ids: join(m.iter().map(|m| m.model_id.clone())),
            data: r.data.clone(),
            tokens: Some(r.tokens),
            seq_len: Some(r.seq_len),
            batch: Some(r.batch),
            device: r.device.clone(),
            warnings: r.warnings.join(" | "),
            saved: r.saved.clone().unwrap_or_default(),
            seconds: Some(r.seconds),
            ..ResultsRow::default()
        }
    }

    /// Refuses a file whose header has a column that is not a results column (before
    /// anything is computed); a missing or empty file is fine.
    pub fn check_file(path: &Path) -> Result<()> {
        read_header(path).map(|_| ())
    }

    /// Every row of a results file (none when it does not exist); a row that does not read
    /// is an error naming its line.
    pub fn read_all(path: &Path) -> Result<Vec<ResultsRow>> {
        Ok(read(path, true)?.0)
    }

    /// The rows that read, and how many did not (a hand-edited line): for showing a file.
    pub fn read_lossy(path: &Path) -> Result<(Vec<ResultsRow>, usize)> {
        read(path, false)
    }

    /// Appends this row under the file's lock. A file with today's header is appended to
    /// (and synced); a new one gets the header; one with an older header is rewritten with
    /// today's through a temporary and a rename, so nothing is half-written.
    pub fn append(&self, path: &Path) -> Result<()> {
        self.append_marking(path, None)
    }

    /// [`append`](Self::append), marking the rows of the same `stack_id` superseded first
    /// (the file is rewritten when one is; every row must read).
    pub fn append_superseding(&self, path: &Path) -> Result<()> {
        self.append_marking(path, Some(&self.stack_id))
    }

    fn append_marking(&self, path: &Path, supersede: Option<&str>) -> Result<()> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let _lock = crate::filelock::exclusive(&crate::filelock::beside(path))?;
        let header = read_header(path)?;
        let current = header
            .as_ref()
            .is_some_and(|h| h.iter().map(String::as_str).eq(COLUMNS.iter().copied()));
        let marks = |r: &ResultsRow| {
            supersede.is_some_and(|id| r.stack_id == id && r.superseded != Some(true))
        };
        if current && supersede.is_none() {
            return append_in_place(path, self);
        }
        let mut rows = Self::read_all(path)?;
        if current && !rows.iter().any(marks) {
            return append_in_place(path, self);
        }
        for r in rows.iter_mut() {
            if marks(r) {
                r.superseded = Some(true);
            }
        }
        rows.push(self.clone());
        crate::paths::write_atomic(path, &to_csv(&rows)?)
    }
}

fn to_csv(rows: &[ResultsRow]) -> Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    if rows.is_empty() {
        w.write_record(COLUMNS)?;
    }
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn append_in_place(path: &Path, row: &ResultsRow) -> Result<()> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.serialize(row)?;
    let mut bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    let ends_with_newline = std::fs::read(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .last()
        .is_none_or(|b| *b == b'\n');
    if !ends_with_newline {
        bytes.insert(0, b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_data())
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// The header's columns (`None`: no file, or an empty one); refused when a column is not a
/// results column.
fn read_header(path: &Path) -> Result<Option<Vec<String>>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut r = csv::ReaderBuilder::new().from_reader(&text[..]);
    let header: Vec<String> = r
        .headers()
        .with_context(|| format!("{}: no readable header", path.display()))?
        .iter()
        .map(str::to_string)
        .collect();
    if let Some(c) = header.iter().find(|c| !COLUMNS.contains(&c.as_str())) {
        bail!(
            "{}: its header has other columns than stack's results (`{c}`); give another --results file",
            path.display()
        );
    }
    // The numbers every row must have (a missing column would read as 0).
    for need in REQUIRED {
        if !header.iter().any(|c| c == need) {
            bail!(
                "{}: its header has other columns than stack's results (no {need}); give another --results file",
                path.display()
            );
        }
    }
    Ok(Some(header))
}

fn read(path: &Path, strict: bool) -> Result<(Vec<ResultsRow>, usize)> {
    if read_header(path)?.is_none() {
        return Ok((vec![], 0));
    }
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (mut rows, mut bad) = (Vec::new(), 0);
    for (i, rec) in r.deserialize::<ResultsRow>().enumerate() {
        match rec {
            Ok(row) => rows.push(row),
            Err(e) if strict => {
                return Err(e).with_context(|| format!("{}: row {}", path.display(), i + 2))
            }
            Err(_) => bad += 1,
        }
    }
    Ok((rows, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NormKind;
    use crate::stack::results::{BlockEntry, ModelEntry};

    fn report() -> StackReport {
        let model = |label: &str, start, end, trained: Option<NormKind>| ModelEntry {
            label: label.into(),
            name: format!("run-{label}/step_000100"),
            path: format!("/ck/run-{label}/step_000100"),
            sha256: format!("sha-{label}"),
            model_id: format!("id-{label}"),
            n_layer: 4,
            start,
            end,
            trained_norm_wte: trained,
            trained_norm_lm_head: trained.map(|_| NormKind::RmsNorm),
            trained_norms_from: trained.map(|_| "meta.toml".into()),
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
            val_loss: 4.25,
            cached: false,
        };
        StackReport {
            val_loss_stack: 4.123456789012345,
            val_losses: vec![4.5, 0.1 + 0.2],
            mean_val_loss: 2.4000000000000004,
            delta_vs_best: 3.823_456_789_012_345,
            use_first_layer: None,
            use_last_layer: None,
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
            norm_inter_model: NormKind::LayerNorm,
            unique_model: true,
            block_list: "m1:0..3 | m2:1..4".into(),
            blocks: (0..6)
                .map(|i| BlockEntry {
                    model: "m1".into(),
                    block: i,
                    attn_scale: 0.125,
                    n_head: 2,
                })
                .collect(),
            models: vec![
                model("m1", 0, 3, Some(NormKind::None)),
                model("m2", 1, 4, Some(NormKind::LayerNorm)),
            ],
            data: "data/val_*.bin".into(),
            tokens: 4096,
            seq_len: 64,
            batch: 4,
            device: "cpu".into(),
            warnings: vec!["a, \"quoted\"\r\nwarning".into(), "second".into()],
            saved: None,
            seconds: 1.5,
            created_at: "2026-12-04T10:00:00+00:00".into(),
        }
    }

    #[test]
    fn the_header_is_the_fields_in_order() {
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        w.serialize(ResultsRow::default()).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
    }

    #[test]
    fn a_report_row_reads_back_equal_with_every_value_computed_from_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new/stacks.csv");
        let r = report();
        let row = ResultsRow::of_report(&r);
        row.append(&p).unwrap();
        row.append(&p).unwrap();
        let back = ResultsRow::read_all(&p).unwrap();
        assert_eq!(back, vec![row.clone(), row.clone()]);
        // Every number exactly (f64 round trip), every list joined in part order.
        assert_eq!(back[0].val_loss_stack.to_bits(), r.val_loss_stack.to_bits());
        assert_eq!(back[0].val_losses, format!("4.5;{}", 0.1 + 0.2));
        assert_eq!(back[0].ranges, "0:3;1:4");
        assert_eq!(back[0].paths, back[0].checkpoints);
        assert_eq!(back[0].training_norms, "none/rms_norm;layer_norm/rms_norm");
        assert_eq!(
            back[0].norm_mismatch,
            Some(true),
            "m2 was trained with layer_norm"
        );
        assert_eq!(back[0].n_blocks, Some(6));
        assert_eq!(back[0].use_first_layer, None);
        assert_eq!(back[0].warnings, "a, \"quoted\"\r\nwarning | second");
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().lines().next().unwrap(),
            COLUMNS.join(",")
        );
    }

    #[test]
    fn an_older_file_is_read_by_name_and_rewritten_with_todays_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stacks.csv");
        // The header `stack --results` wrote before the sweep's keys joined it.
        let old = "created_at,val_loss_stack,val_losses,mean_val_loss,delta_vs_best,use_first_layer,use_last_layer,norm_wte,norm_lm_head,norm_inter_model,unique_model,block_list,n_blocks,attn_scales,models,paths,sha256,ranges,trained_norm_wte,trained_norm_lm_head,data,tokens,seq_len,batch,device,warnings,saved,seconds\n\
                   t0,4.5,4.6;4.7,4.65,-0.1,true,false,none,rms_norm,none,true,m1:0..2 | m2:1..2,3,0.1;0.1;0.1,a;b,/a;/b,s1;s2,0:2;1:2,none;none,rms_norm;rms_norm,val,512,64,8,cpu,,,2.5\n";
        std::fs::write(&p, old).unwrap();
        ResultsRow::check_file(&p).unwrap();
        let rows = ResultsRow::read_all(&p).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].val_loss_stack, 4.5);
        assert_eq!(rows[0].paths, "/a;/b");
        assert_eq!(rows[0].stack_id, "");
        let new = ResultsRow::of_report(&report());
        new.append(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().next().unwrap(), COLUMNS.join(","));
        assert_eq!(
            ResultsRow::read_all(&p).unwrap(),
            vec![rows[0].clone(), new]
        );
    }

    #[test]
    fn rows_of_the_same_stack_are_superseded_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("results.csv");
        let row = |id: &str, loss: f64| ResultsRow {
            stack_id: id.into(),
            val_loss_stack: loss,
            superseded: Some(false),
            ..ResultsRow::default()
        };
        row("a", 1.0).append_superseding(&p).unwrap();
        row("b", 2.0).append_superseding(&p).unwrap();
        row("a", 3.0).append_superseding(&p).unwrap();
        let got: Vec<(String, f64, Option<bool>)> = ResultsRow::read_all(&p)
            .unwrap()
            .into_iter()
            .map(|r| (r.stack_id, r.val_loss_stack, r.superseded))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 1.0, Some(true)),
                ("b".into(), 2.0, Some(false)),
                ("a".into(), 3.0, Some(false)),
            ]
        );
    }

    #[test]
    fn files_that_are_not_results_are_refused_naming_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("foreign.csv");
        std::fs::write(&foreign, "a,b\n1,2\n").unwrap();
        let e = ResultsRow::check_file(&foreign).unwrap_err().to_string();
        assert!(
            e.contains("its header has other columns") && e.contains("`a`"),
            "{e}"
        );
        // A results column missing that every row needs: it would read as 0.
        let partial = dir.path().join("partial.csv");
        std::fs::write(&partial, "val_loss_stack,delta_vs_best\n1,2\n").unwrap();
        let e = ResultsRow::check_file(&partial).unwrap_err().to_string();
        assert!(e.contains("no mean_val_loss"), "{e}");
        assert!(ResultsRow::of_report(&report()).append(&foreign).is_err());
        assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "a,b\n1,2\n");
        // A missing or empty file is fine.
        ResultsRow::check_file(&dir.path().join("none.csv")).unwrap();
    }

    #[test]
    fn a_row_that_does_not_read_is_counted_when_showing_and_an_error_only_for_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stacks.csv");
        ResultsRow::of_report(&report()).append(&p).unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("t1,not a number,,1,1\n");
        std::fs::write(&p, &text).unwrap();
        let (rows, bad) = ResultsRow::read_lossy(&p).unwrap();
        assert_eq!((rows.len(), bad), (1, 1));
        // Appending to a file with today's header adds a line and reads nothing else.
        ResultsRow::of_report(&report()).append(&p).unwrap();
        assert_eq!(ResultsRow::read_lossy(&p).unwrap().0.len(), 2);
        // Rewriting it (to mark rows superseded) would drop the bad row: refused instead.
        let before = std::fs::read_to_string(&p).unwrap();
        let e = ResultsRow::default().append_superseding(&p).unwrap_err();
        assert!(format!("{e:#}").contains("row 3"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), before, "nothing lost");
    }
}
