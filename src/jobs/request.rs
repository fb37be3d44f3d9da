//! Typed requests for `stacklab` children, each with the one `to_args()` that builds its
//! command line. What a request says is what the child does: the round-trip tests parse
//! each `to_args()` with the real command-line parser and compare.

use std::path::PathBuf;

use crate::stack::{EvalOptions, Layers, StackSpec};

/// `stacklab train`: a new run from a config (with `--set` overrides), or a resume.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    pub start: TrainStart,
    pub stop_after: Option<i64>,
    pub device: String,
    /// The checkpoint dir the child trains under (`STACKLAB_CHECKPOINT_DIR`), when not
    /// the parent's.
    pub checkpoint_dir: Option<PathBuf>,
    /// Processes to train in (`--nproc`); one when `None`.
    pub nproc: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainStart {
    /// `--config CONFIG [--name NAME] [--set KEY=VALUE ...]`
    New {
        config: String,
        name: Option<String>,
        sets: Vec<String>,
    },
    /// `--resume RUN_DIR`
    Resume(PathBuf),
}

impl TrainRequest {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["train".to_string()];
        match &self.start {
            TrainStart::New { config, name, sets } => {
                a.extend(["--config".into(), config.clone()]);
                if let Some(n) = name {
                    a.extend(["--name".into(), n.clone()]);
                }
                for s in sets {
                    a.extend(["--set".into(), s.clone()]);
                }
            }
            TrainStart::Resume(dir) => a.extend(["--resume".into(), dir.display().to_string()]),
        }
        if let Some(s) = self.stop_after {
            a.extend(["--stop-after".into(), s.to_string()]);
        }
        a.extend(["--device".into(), self.device.clone()]);
        if let Some(n) = self.nproc {
            a.extend(["--nproc".into(), n.to_string()]);
        }
        a
    }

    /// The environment the child needs beyond the parent's.
    pub fn env(&self) -> Vec<(String, String)> {
        self.checkpoint_dir
            .iter()
            .map(|d| {
                (
                    crate::paths::ENV_CHECKPOINT_DIR.to_string(),
                    d.display().to_string(),
                )
            })
            .collect()
    }
}

/// Which stack: its spec, and the spec file it came from when there is one (`--spec`: the
/// child checks the weights' sha256 the file records).
#[derive(Debug, Clone, PartialEq)]
pub struct StackSelection {
    pub spec: StackSpec,
    pub spec_file: Option<PathBuf>,
    pub eval: EvalOptions,
    pub device: String,
}

impl StackSelection {
    /// A stack given by its spec alone.
    pub fn of(spec: StackSpec, eval: EvalOptions, device: &str) -> StackSelection {
        StackSelection {
            spec,
            spec_file: None,
            eval,
            device: device.to_string(),
        }
    }

    /// The flags `stack` and `inspect` share.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = match &self.spec_file {
            Some(f) => vec!["--spec".to_string(), f.display().to_string()],
            None => layer_args(&self.spec),
        };
        a.extend(norm_and_eval_args(&self.spec, &self.eval));
        a.extend(["--device".into(), self.device.clone()]);
        a
    }
}

/// The flags that give a stack by its spec and how to score it (no device): `--models`,
/// the layers, the norms and the data.
pub fn spec_args(spec: &StackSpec, eval: &EvalOptions) -> Vec<String> {
    let mut a = layer_args(spec);
    a.extend(norm_and_eval_args(spec, eval));
    a
}

fn layer_args(s: &StackSpec) -> Vec<String> {
    let mut a = vec!["--models".to_string()];
    a.extend(s.models.iter().cloned());
    match &s.layers {
        Layers::Ranges(r) => {
            let r: Vec<String> = r.iter().map(|r| format!("{}:{}", r.start, r.end)).collect();
            a.extend(["--ranges".into(), r.join(",")]);
        }
        Layers::Flags {
            use_first_layer,
            use_last_layer,
        } => {
            if *use_first_layer {
                a.push("--use-first-layer".into());
            }
            if *use_last_layer {
                a.push("--use-last-layer".into());
            }
        }
    }
    a
}

fn norm_and_eval_args(s: &StackSpec, e: &EvalOptions) -> Vec<String> {
    let mut a = Vec::new();
    for (flag, n) in [
        ("--norm-wte", s.norms.norm_wte),
        ("--norm-lm-head", s.norms.norm_lm_head),
        ("--norm-inter-model", s.norms.norm_inter_model),
    ] {
        a.extend([flag.to_string(), n.to_string()]);
    }
    let mut opt = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            a.extend([flag.to_string(), v]);
        }
    };
    opt("--data", e.data.clone());
    opt("--train-data", e.train_data.clone());
    opt(
        "--part-norms",
        e.part_norms.map(|(w, h)| format!("{w}/{h}")),
    );
    opt("--tokens", e.tokens.map(|v| v.to_string()));
    opt("--seq-len", e.seq_len.map(|v| v.to_string()));
    opt("--batch", e.batch.map(|v| v.to_string()));
    opt("--n-head", e.n_head.map(|v| v.to_string()));
    a
}

/// `stacklab stack ... --json`: score a stack beside its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct StackRequest {
    pub selection: StackSelection,
    /// `--results FILE.csv`: append the result row.
    pub results: Option<PathBuf>,
    /// `--save DIR`: save the stack as a checkpoint folder.
    pub save: Option<PathBuf>,
    pub no_cache: bool,
}

impl StackRequest {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["stack".to_string()];
        a.extend(self.selection.to_args());
        if let Some(r) = &self.results {
            a.extend(["--results".into(), r.display().to_string()]);
        }
        if let Some(s) = &self.save {
            a.extend(["--save".into(), s.display().to_string()]);
        }
        if self.no_cache {
            a.push("--no-cache".into());
        }
        a.push("--json".into());
        a
    }
}

/// `stacklab inspect ... --json`: the stack's seam, each part alone on the same probe.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectRequest {
    pub selection: StackSelection,
    /// `--plot DIR`: write the figures.
    pub plot: Option<PathBuf>,
    /// `--stitch STEPS`: train each seam's stitch (0: least squares only).
    pub stitch: i64,
}

impl InspectRequest {
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["inspect".to_string()];
        a.extend(self.selection.to_args());
        if let Some(p) = &self.plot {
            a.extend(["--plot".into(), p.display().to_string()]);
        }
        if self.stitch > 0 {
            a.extend(["--stitch".into(), self.stitch.to_string()]);
        }
        a.push("--json".into());
        a
    }
}

/// `stacklab heal ... --json`: train the arms of a stack's recovery study.
#[derive(Debug, Clone, PartialEq)]
pub struct HealRequest {
    pub selection: StackSelection,
    pub steps: i64,
    /// `stack`, `self`, `scratch`, `continue` (in order).
    pub arms: Vec<String>,
    pub name: String,
    pub train_w: bool,
}

impl HealRequest {
    /// The runs the arms train as (`NAME-stack`, ...).
    pub fn runs(&self) -> Vec<String> {
        self.arms
            .iter()
            .map(|a| format!("{}-{a}", self.name))
            .collect()
    }

    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["heal".to_string()];
        a.extend(self.selection.to_args());
        a.extend([
            "--steps".into(),
            self.steps.to_string(),
            "--arms".into(),
            self.arms.join(","),
            "--name".into(),
            self.name.clone(),
        ]);
        if self.train_w {
            a.push("--train-w".into());
        }
        a.push("--json".into());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::NormKind;
    use crate::stack::{BlockRange, StackNorms};
    use clap::Parser;

    fn parse(args: Vec<String>) -> Command {
        let mut argv = vec!["stacklab".to_string()];
        argv.extend(args);
        Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"))
            .command
            .expect("a subcommand")
    }

    fn selections(dir: &std::path::Path) -> Vec<StackSelection> {
        let flags = StackSpec {
            models: vec![
                "runs/a".into(),
                "/abs/b/step_000100".into(),
                "runs/a".into(),
            ],
            layers: Layers::Flags {
                use_first_layer: true,
                use_last_layer: false,
            },
            norms: StackNorms {
                norm_wte: NormKind::LayerNorm,
                norm_lm_head: NormKind::None,
                norm_inter_model: NormKind::RmsNorm,
            },
            sha256: vec![None; 3],
        };
        let ranges = StackSpec {
            models: vec!["m one.safetensors".into(), "m2".into()],
            layers: Layers::Ranges(vec![BlockRange::new(0, 3), BlockRange::new(1, 4)]),
            norms: StackNorms::default(),
            sha256: vec![None; 2],
        };
        let file = dir.join("spec.toml");
        let recorded = StackSpec {
            sha256: vec![Some("ab12".into()), None],
            ..ranges.clone()
        };
        std::fs::write(&file, recorded.to_toml_string()).unwrap();
        let full = EvalOptions {
            data: Some("data/val_*.bin".into()),
            train_data: Some("data/train_*.bin".into()),
            part_norms: Some((NormKind::None, NormKind::RmsNorm)),
            tokens: Some(4096),
            seq_len: Some(64),
            batch: Some(3),
            n_head: Some(2),
        };
        vec![
            StackSelection::of(flags.clone(), EvalOptions::default(), "cpu"),
            StackSelection::of(ranges.clone(), full.clone(), "cuda:1"),
            StackSelection {
                spec: recorded,
                spec_file: Some(file),
                eval: full,
                device: "auto".into(),
            },
            StackSelection::of(
                StackSpec {
                    layers: Layers::Flags {
                        use_first_layer: false,
                        use_last_layer: true,
                    },
                    ..flags
                },
                EvalOptions {
                    tokens: Some(1),
                    ..EvalOptions::default()
                },
                "cpu",
            ),
        ]
    }

    fn same_selection(sel: &crate::cli::StackSelectionArgs, want: &StackSelection) {
        assert_eq!(sel.spec().unwrap(), want.spec);
        assert_eq!(sel.eval().unwrap(), want.eval);
        assert_eq!(sel.spec, want.spec_file);
        assert_eq!(sel.device.device, want.device);
    }

    #[test]
    fn stack_requests_round_trip_through_the_parser() {
        let dir = tempfile::tempdir().unwrap();
        for selection in selections(dir.path()) {
            for (results, save, no_cache) in [
                (None, None, false),
                (
                    Some(PathBuf::from("lab/stacks.csv")),
                    Some(PathBuf::from("out/s")),
                    true,
                ),
            ] {
                let req = StackRequest {
                    selection: selection.clone(),
                    results,
                    save,
                    no_cache,
                };
                let Command::Stack(a) = parse(req.to_args()) else {
                    panic!("not a stack command")
                };
                same_selection(&a.sel, &req.selection);
                assert_eq!(a.results, req.results);
                assert_eq!(a.save, req.save);
                assert_eq!(a.no_cache, req.no_cache);
                assert!(a.json, "a child's report is JSON");
            }
        }
    }

    #[test]
    fn inspect_requests_round_trip_through_the_parser() {
        let dir = tempfile::tempdir().unwrap();
        for selection in selections(dir.path()) {
            for (plot, stitch) in [(None, 0), (Some(PathBuf::from("figs/x")), 25)] {
                let req = InspectRequest {
                    selection: selection.clone(),
                    plot,
                    stitch,
                };
                let Command::Inspect(a) = parse(req.to_args()) else {
                    panic!("not an inspect command")
                };
                same_selection(&a.sel, &req.selection);
                assert_eq!(a.plot, req.plot);
                assert_eq!(a.stitch, req.stitch);
                assert!(a.json);
            }
        }
    }

    #[test]
    fn heal_requests_round_trip_through_the_parser() {
        let dir = tempfile::tempdir().unwrap();
        for selection in selections(dir.path()) {
            for (arms, train_w) in [
                (vec!["stack", "self", "scratch", "continue"], false),
                (vec!["continue", "stack"], true),
            ] {
                let req = HealRequest {
                    selection: selection.clone(),
                    steps: 100,
                    arms: arms.iter().map(|a| a.to_string()).collect(),
                    name: "heal-x".into(),
                    train_w,
                };
                let Command::Heal(a) = parse(req.to_args()) else {
                    panic!("not a heal command")
                };
                same_selection(&a.sel, &req.selection);
                assert_eq!(a.steps, req.steps);
                assert_eq!(a.arms, req.arms);
                assert_eq!(a.name.as_deref(), Some("heal-x"));
                assert_eq!(a.train_w, train_w);
                assert!(a.json);
                assert_eq!(req.runs()[0], format!("heal-x-{}", arms[0]));
            }
        }
    }

    #[test]
    fn train_requests_round_trip_through_the_parser() {
        let reqs = [
            TrainRequest {
                start: TrainStart::New {
                    config: "tiny".into(),
                    name: Some("run-a".into()),
                    sets: vec!["model.n_layer=2".into(), "schedule.steps=5".into()],
                },
                stop_after: Some(3),
                device: "cpu".into(),
                checkpoint_dir: Some(PathBuf::from("/tmp/ck")),
                nproc: Some(2),
            },
            TrainRequest {
                start: TrainStart::Resume(PathBuf::from("/ck/wide")),
                stop_after: None,
                device: "cuda:1,cuda:3".into(),
                checkpoint_dir: None,
                nproc: Some(2),
            },
            TrainRequest {
                start: TrainStart::New {
                    config: "configs/x.toml".into(),
                    name: None,
                    sets: vec![],
                },
                stop_after: None,
                device: "cuda:0".into(),
                checkpoint_dir: None,
                nproc: None,
            },
            TrainRequest {
                start: TrainStart::Resume(PathBuf::from("/ck/run a")),
                stop_after: None,
                device: "auto".into(),
                checkpoint_dir: None,
                nproc: None,
            },
        ];
        for req in reqs {
            let Command::Train(a) = parse(req.to_args()) else {
                panic!("not a train command")
            };
            match &req.start {
                TrainStart::New { config, name, sets } => {
                    assert_eq!(a.config.as_ref(), Some(config));
                    assert_eq!(&a.name, name);
                    assert_eq!(&a.set, sets);
                    assert_eq!(a.resume, None);
                }
                TrainStart::Resume(dir) => {
                    assert_eq!(a.resume.as_ref(), Some(dir));
                    assert_eq!(a.config, None);
                }
            }
            assert_eq!(a.stop_after, req.stop_after);
            assert_eq!(a.nproc, req.nproc);
            assert_eq!(a.device.device, req.device);
            let env = req.env();
            match &req.checkpoint_dir {
                Some(d) => assert_eq!(
                    env,
                    vec![(
                        crate::paths::ENV_CHECKPOINT_DIR.to_string(),
                        d.display().to_string()
                    )]
                ),
                None => assert!(env.is_empty()),
            }
        }
    }
}
