//! Checkpoint retention: `checkpoint_keep_last = N` keeps a run's newest N checkpoints and
//! `checkpoint_keep_every = K` also every checkpoint whose step is a multiple of K. The
//! newest checkpoint is always kept, only complete checkpoints count, and a checkpoint that
//! another run's `from_model` or `init_from` names (in its config, its checkpoints' lineage,
//! or a queued request) is kept, with the reason said.
//!
//! A training applies its retention after each checkpoint it completes; `stacklab gc`
//! applies it to runs that are not training.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::checkpoint::{list_checkpoints, step_of};
use super::disk;
use super::run_dir::CONFIG_FILE;
pub use lineage::Lineages;

mod lineage;

/// How many checkpoints a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// The newest this many; 0 keeps every checkpoint.
    pub keep_last: i64,
    /// Also every checkpoint whose step is a multiple of this; 0: none.
    pub keep_every: i64,
}

impl Retention {
    pub fn of_config(cfg: &crate::config::TrainConfig) -> Retention {
        Retention {
            keep_last: cfg.checkpoint_keep_last,
            keep_every: cfg.checkpoint_keep_every,
        }
    }

    /// The keys of a run's `config.toml` (absent keys keep all, as runs from before them).
    pub fn of_run(run: &Path) -> Result<Retention> {
        let p = run.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|_| anyhow::anyhow!("{}: not valid TOML", p.display()))?;
        let key = |k: &str| -> Result<i64> {
            match table.get(k) {
                None => Ok(0),
                Some(toml::Value::Integer(v)) if *v >= 0 => Ok(*v),
                Some(v) => bail!(
                    "{}: `{k}`: expected an integer, 0 or more, found {v}",
                    p.display()
                ),
            }
        };
        Ok(Retention {
            keep_last: key("checkpoint_keep_last")?,
            keep_every: key("checkpoint_keep_every")?,
        })
    }

    pub fn keeps_all(&self) -> bool {
        self.keep_last <= 0
    }

    pub fn describe(&self) -> String {
        if self.keeps_all() {
            return "keeps every checkpoint".into();
        }
        let mut s = format!("keeps the last {}", self.keep_last);
        if self.keep_every > 0 {
            s.push_str(&format!(" and every step divisible by {}", self.keep_every));
        }
        s
    }
}

/// One checkpoint retention removes.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub path: PathBuf,
    pub step: i64,
    pub bytes: u64,
}

/// What retention does to one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub remove: Vec<Removal>,
    /// Checkpoints retention would remove but a lineage names: path and why.
    pub kept_for_lineage: Vec<(PathBuf, String)>,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.remove.iter().map(|r| r.bytes).sum()
    }
}

/// The checkpoints of `run` that `r` removes (complete ones only; never the newest).
pub fn plan(run: &Path, r: &Retention, lineages: &Lineages) -> Plan {
    let mut plan = Plan::default();
    if r.keeps_all() {
        return plan;
    }
    let run_name = super::RunDir::new(run).name();
    let cks = list_checkpoints(run);
    let n = cks.len();
    for (i, ck) in cks.into_iter().enumerate() {
        let ck_name = ck
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(step) = step_of(&ck_name) else {
            continue;
        };
        let newest = i as i64 + r.keep_last >= n as i64;
        let every = r.keep_every > 0 && step % r.keep_every == 0;
        if newest || every {
            continue;
        }
        match lineages.why(&run_name, &ck_name) {
            Some(why) => plan.kept_for_lineage.push((ck, why)),
            None => plan.remove.push(Removal {
                bytes: disk::disk_size(&ck),
                path: ck,
                step,
            }),
        }
    }
    plan
}

/// Removes what the plan says (each folder moved aside, then deleted); returns the bytes
/// freed and an error per checkpoint that could not be removed.
pub fn apply(plan: &Plan) -> (u64, Vec<String>) {
    let mut freed = 0;
    let mut errors = Vec::new();
    for r in &plan.remove {
        match disk::remove_dir_safely(&r.path) {
            Ok(b) => freed += b,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    (freed, errors)
}

/// Hidden leftovers in `dir` from a checkpoint write or a removal whose process is gone
/// (`.step_NNNNNN.tmp-PID`, `.NAME.rm-PID`).
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = disk::unfinished_removals(dir);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.rsplit_once(".tmp-") else {
            continue;
        };
        let dead = pid
            .parse::<u32>()
            .is_ok_and(|p| !super::process::is_alive_as(p, None));
        if name.starts_with('.') && dead && e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint::META_FILE;
    use super::super::queue::{Queue, Request};
    use super::*;

    fn ck(run: &Path, step: i64, meta: &str) {
        let d = run.join(super::super::checkpoint::checkpoint_dir_name(step));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.safetensors"), vec![0u8; 5000]).unwrap();
        std::fs::write(d.join(META_FILE), meta).unwrap();
    }

    fn steps(p: &Plan) -> Vec<i64> {
        p.remove.iter().map(|r| r.step).collect()
    }

    #[test]
    fn keep_last_keep_every_and_lineage() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = root.join("a");
        for s in (10..=100).step_by(10) {
            ck(&a, s, "");
        }
        // Half-written: no meta.toml; never counted, never removed.
        std::fs::create_dir_all(a.join("step_000110")).unwrap();
        let none = Lineages::default();
        let keep = |last, every| Retention {
            keep_last: last,
            keep_every: every,
        };
        assert!(plan(&a, &keep(0, 0), &none).remove.is_empty(), "keeps all");
        assert_eq!(
            steps(&plan(&a, &keep(3, 0), &none)),
            [10, 20, 30, 40, 50, 60, 70]
        );
        assert_eq!(
            steps(&plan(&a, &keep(1, 40), &none)),
            [10, 20, 30, 50, 60, 70, 90]
        );
        assert_eq!(
            plan(&a, &keep(3, 0), &none).remove[0].bytes,
            disk::disk_size(&a.join("step_000010"))
        );

        // Run b's config names a/step_000020, run c's checkpoint lineage a/step_000030, a
        // queued run a/step_000040; d names run a alone (its latest).
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(
            root.join("b/config.toml"),
            "from_model = \"checkpoints/a/step_000020/\"\n",
        )
        .unwrap();
        ck(
            &root.join("c"),
            5,
            "[init_from]\nname = \"a/step_000030\"\nsha256 = \"x\"\n",
        );
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/config.toml"), "init_from = \"a\"\n").unwrap();
        Queue::new(root)
            .push(&super::super::queue::QueuedRun::new(
                "e",
                "cpu",
                Request::New {
                    config: "tiny".into(),
                    sets: vec!["from_model=a/step_000040".into()],
                },
            ))
            .unwrap();
        let lineages = Lineages::scan(root);
        let p = plan(&a, &keep(2, 0), &lineages);
        assert_eq!(steps(&p), [10, 50, 60, 70, 80]);
        let kept: Vec<(String, &str)> = p
            .kept_for_lineage
            .iter()
            .map(|(c, w)| {
                (
                    c.file_name().unwrap().to_string_lossy().into_owned(),
                    w.as_str(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                (
                    "step_000020".into(),
                    "run b's config (from_model = \"checkpoints/a/step_000020/\")"
                ),
                (
                    "step_000030".into(),
                    "run c's init_from lineage (a/step_000030)"
                ),
                (
                    "step_000040".into(),
                    "queued run e's from_model (a/step_000040)"
                ),
            ]
        );
        let want = p.bytes();
        let before = disk::disk_size(&a);
        assert_eq!(apply(&p), (want, vec![]));
        assert_eq!(before - disk::disk_size(&a), want);
        assert_eq!(
            list_checkpoints(&a).len(),
            5,
            "20, 30, 40 for lineage; 90, 100 the last two"
        );
        assert!(a.join("step_000110").is_dir());
    }

    #[test]
    fn retention_keys_of_a_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "seed = 1\n").unwrap();
        assert!(Retention::of_run(dir.path()).unwrap().keeps_all());
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "checkpoint_keep_last = 2\ncheckpoint_keep_every = 100\n",
        )
        .unwrap();
        let r = Retention::of_run(dir.path()).unwrap();
        assert_eq!((r.keep_last, r.keep_every), (2, 100));
        std::fs::write(dir.path().join(CONFIG_FILE), "checkpoint_keep_last = -1\n").unwrap();
        let e = Retention::of_run(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("`checkpoint_keep_last`") && e.contains("config.toml"),
            "{e}"
        );
    }

    #[test]
    fn leftovers_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        for n in [
            format!(".step_000010.tmp-{me}"),
            format!(".step_000020.tmp-{}", u32::MAX - 2),
            format!(".step_000030.old-{}", u32::MAX - 2),
            ".queue".to_string(),
        ] {
            std::fs::create_dir_all(dir.path().join(n)).unwrap();
        }
        assert_eq!(
            leftovers(dir.path()),
            [dir.path()
                .join(format!(".step_000020.tmp-{}", u32::MAX - 2))]
        );
    }
}
