//! The stack being built: its parts, which blocks of each, the boundary norms; what `stack`
//! would refuse or warn about, from the checkpoints' metadata alone; and the command line
//! that evaluates it. Plain state, tested without a terminal.

use std::path::PathBuf;

use crate::config::NormKind;
use crate::runs::catalog::{CkptInfo, Entry};
use crate::stack::spec::{flag_ranges, flags_of, BlockRange, Layers, StackNorms, StackSpec};
use crate::stack::EvalOptions;

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub path: PathBuf,
    /// The checkpoint's name in the catalog (`run/step_000120`).
    pub name: String,
    pub info: CkptInfo,
}

impl Part {
    pub fn from_entry(e: &Entry) -> Result<Part, String> {
        match &e.info {
            Ok(info) => Ok(Part {
                path: e.path.clone(),
                name: e.label.clone(),
                info: info.clone(),
            }),
            Err(why) => Err(format!("{}: {why}", e.label)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub parts: Vec<Part>,
    pub use_first_layer: bool,
    pub use_last_layer: bool,
    /// Ranges edited by hand (they replace the flags); `None` while the flags decide.
    pub custom: Option<Vec<BlockRange>>,
    pub norms: StackNorms,
    /// The part whose range the range keys edit.
    pub selected: usize,
}

fn next_norm(n: NormKind) -> NormKind {
    match n {
        NormKind::None => NormKind::RmsNorm,
        NormKind::RmsNorm => NormKind::LayerNorm,
        NormKind::LayerNorm => NormKind::None,
    }
}

/// Which end of a range a key moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Start,
    End,
}

impl Draft {
    pub fn new(parts: Vec<Part>) -> Draft {
        let mut d = Draft {
            parts,
            use_first_layer: false,
            use_last_layer: false,
            custom: None,
            norms: StackNorms::default(),
            selected: 0,
        };
        // Start from the norms the bottom model was trained with, as `stack` reports them.
        if let Some(p) = d.parts.first() {
            let parse = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<NormKind>().ok());
            if let Some(n) = parse(&p.info.norm_wte) {
                d.norms.norm_wte = n;
            }
            if let Some(n) = parse(&p.info.norm_lm_head) {
                d.norms.norm_lm_head = n;
            }
        }
        d
    }

    /// The draft with these block ranges (as the flags when a pair of flags gives them)
    /// and these boundary norms: a stack evaluated before, opened again.
    pub fn with_layers(mut self, ranges: Vec<BlockRange>, norms: StackNorms) -> Draft {
        self.norms = norms;
        if ranges.len() == self.parts.len() {
            match flags_of(&ranges, &self.depths()) {
                Some((f, l)) => (self.use_first_layer, self.use_last_layer) = (f, l),
                None => self.custom = Some(ranges),
            }
        }
        self
    }

    pub fn depths(&self) -> Vec<i64> {
        self.parts.iter().map(|p| p.info.n_layer).collect()
    }

    pub fn ranges(&self) -> Vec<BlockRange> {
        match &self.custom {
            Some(r) => r.clone(),
            None => flag_ranges(self.use_first_layer, self.use_last_layer, &self.depths()),
        }
    }

    /// One label per distinct model, in order of first appearance (as `stack` names them).
    pub fn labels(&self) -> Vec<String> {
        let mut seen: Vec<&PathBuf> = Vec::new();
        self.parts
            .iter()
            .map(|p| {
                let i = match seen.iter().position(|s| **s == p.path) {
                    Some(i) => i,
                    None => {
                        seen.push(&p.path);
                        seen.len() - 1
                    }
                };
                format!("m{}", i + 1)
            })
            .collect()
    }

    /// `m1:0..11 | m2:1..12`, as `stack` reports it.
    pub fn block_list(&self) -> String {
        self.labels()
            .iter()
            .zip(self.ranges())
            .map(|(l, r)| format!("{l}:{r}"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// The flags that give the current ranges, if any do.
    pub fn flags(&self) -> Option<(bool, bool)> {
        match &self.custom {
            None => Some((self.use_first_layer, self.use_last_layer)),
            Some(r) => flags_of(r, &self.depths()),
        }
    }

    /// Toggles use_first_layer; hand-edited ranges give way to the flags they are closest to.
    pub fn toggle_first(&mut self) {
        let (f, l) = self
            .flags()
            .unwrap_or((self.use_first_layer, self.use_last_layer));
        (self.use_first_layer, self.use_last_layer, self.custom) = (!f, l, None);
    }

    pub fn toggle_last(&mut self) {
        let (f, l) = self
            .flags()
            .unwrap_or((self.use_first_layer, self.use_last_layer));
        (self.use_first_layer, self.use_last_layer, self.custom) = (f, !l, None);
    }

    pub fn cycle_norm(&mut self, which: &str) {
        let n = match which {
            "norm_wte" => &mut self.norms.norm_wte,
            "norm_lm_head" => &mut self.norms.norm_lm_head,
            _ => &mut self.norms.norm_inter_model,
        };
        *n = next_norm(*n);
    }

    /// Moves one end of the selected part's range by `by`, within 0..=depth.
    pub fn nudge(&mut self, end: End, by: i64) {
        if self.parts.is_empty() {
            return;
        }
        let mut r = self.ranges();
        let depth = self.parts[self.selected].info.n_layer;
        let x = &mut r[self.selected];
        match end {
            End::Start => x.start = (x.start + by).clamp(0, depth),
            End::End => x.end = (x.end + by).clamp(0, depth),
        }
        // Back to the flags when the ranges are what a pair of flags gives.
        match flags_of(&r, &self.depths()) {
            Some((f, l)) => {
                self.use_first_layer = f;
                self.use_last_layer = l;
                self.custom = None;
            }
            None => self.custom = Some(r),
        }
    }

    pub fn select(&mut self, by: i64) {
        if !self.parts.is_empty() {
            let n = self.parts.len() as i64;
            self.selected = (self.selected as i64 + by).rem_euclid(n) as usize;
        }
    }

    /// Adds the selected part again above it (the same-model baseline).
    pub fn duplicate(&mut self) {
        if let Some(p) = self.parts.get(self.selected).cloned() {
            self.reshape(|parts, i| parts.insert(i + 1, p));
        }
    }

    pub fn remove(&mut self) {
        if !self.parts.is_empty() {
            self.reshape(|parts, i| {
                parts.remove(i);
            });
            self.selected = self.selected.min(self.parts.len().saturating_sub(1));
        }
    }

    /// Moves the selected part one place down (towards the bottom, -1) or up (+1).
    pub fn move_part(&mut self, by: i64) {
        let j = self.selected as i64 + by;
        if j >= 0 && (j as usize) < self.parts.len() {
            let i = self.selected;
            self.reshape(|parts, _| parts.swap(i, j as usize));
            self.selected = j as usize;
        }
    }

    /// Changes the parts; ranges edited by hand no longer fit, so the flags decide again.
    fn reshape(&mut self, f: impl FnOnce(&mut Vec<Part>, usize)) {
        f(&mut self.parts, self.selected);
        self.custom = None;
    }

    /// What `stack` would refuse: checked before anything runs.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.parts.len() < 2 {
            out.push(format!(
                "a stack needs at least two parts, got {}: mark checkpoints in the Checkpoints pane (space, then b)",
                self.parts.len()
            ));
            return out;
        }
        let labels = self.labels();
        let first = &self.parts[0].info;
        for (p, l) in self.parts.iter().zip(&labels).skip(1) {
            if (p.info.n_embd, p.info.vocab_size) != (first.n_embd, first.vocab_size) {
                out.push(format!(
                    "{l} ({}) has width {} and vocabulary {}, m1 has {} and {}: parts need the same",
                    p.name, p.info.n_embd, p.info.vocab_size, first.n_embd, first.vocab_size
                ));
            }
        }
        for ((p, l), r) in self.parts.iter().zip(&labels).zip(self.ranges()) {
            if r.start >= r.end || r.start < 0 || r.end > p.info.n_layer {
                out.push(format!(
                    "{l} ({}): block range [{}, {}) holds no blocks of its {} (ranges are half-open [start, end))",
                    p.name, r.start, r.end, p.info.n_layer
                ));
            }
        }
        out
    }

    /// What `stack` would warn about: parts that do not share `W` (by the hash their
    /// metadata records), norms other than a model was trained with.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let labels = self.labels();
        let Some(first) = self.parts.first() else {
            return out;
        };
        let mut seen = Vec::new();
        for (p, l) in self.parts.iter().zip(&labels) {
            if seen.contains(l) {
                continue;
            }
            seen.push(l.clone());
            if l != "m1" {
                match (&p.info.wte_sha256, &first.info.wte_sha256) {
                    (Some(a), Some(b)) if a != b => out.push(format!(
                        "{l} ({}) and m1 do not share the same W: not a shared-embedding stack (embedding and head come from m1)",
                        p.name
                    )),
                    (None, _) | (_, None) => out.push(format!(
                        "{l} ({}): whether it shares m1's W is checked when evaluating (seed files record no W hash)",
                        p.name
                    )),
                    _ => {}
                }
            }
            for (key, trained, used) in [
                ("norm_wte", &p.info.norm_wte, self.norms.norm_wte),
                (
                    "norm_lm_head",
                    &p.info.norm_lm_head,
                    self.norms.norm_lm_head,
                ),
            ] {
                if let Some(t) = trained {
                    if *t != used.to_string() {
                        out.push(format!(
                            "{l} ({}) was trained with {key} = {t}, but the stack uses {key} = {used}",
                            p.name
                        ));
                    }
                }
            }
        }
        out
    }

    /// The stack as a spec: the parts' checkpoints bottom first, the flags or the ranges
    /// edited by hand, the norms.
    pub fn spec(&self) -> StackSpec {
        StackSpec {
            models: self
                .parts
                .iter()
                .map(|p| p.path.display().to_string())
                .collect(),
            layers: match &self.custom {
                Some(r) => Layers::Ranges(r.clone()),
                None => Layers::Flags {
                    use_first_layer: self.use_first_layer,
                    use_last_layer: self.use_last_layer,
                },
            },
            norms: self.norms,
            sha256: vec![None; self.parts.len()],
        }
    }

    /// The stack's `stack`/`inspect` selection arguments.
    pub fn selection_args(&self) -> Vec<String> {
        crate::jobs::request::spec_args(&self.spec(), &EvalOptions::default())
    }

    /// A short description (`m1 run-a/step_000120 | m2 run-b/step_000120`).
    pub fn describe(&self) -> String {
        format!("stack {}", self.block_list())
    }
}
