//! What a stack is: two or more parts, each a model and a half-open block range
//! `[start, end)`, and three boundary norms. The seed's `use_first_layer` /
//! `use_last_layer` flags are shorthands for ranges; a spec reads from and writes to TOML.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::NormKind;

/// Blocks `start..end` of a model (half-open: `end` is not included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRange {
    pub start: i64,
    pub end: i64,
}

impl BlockRange {
    pub fn new(start: i64, end: i64) -> BlockRange {
        BlockRange { start, end }
    }
    pub fn len(&self) -> i64 {
        (self.end - self.start).max(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for BlockRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl std::str::FromStr for BlockRange {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (a, b) = s
            .trim()
            .split_once(':')
            .with_context(|| format!("range `{s}`: expected start:end, e.g. 0:11"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<i64>()
                .with_context(|| format!("range `{s}`: `{v}` is not a whole number"))
        };
        Ok(BlockRange::new(parse(a)?, parse(b)?))
    }
}

/// Parses `--ranges "0:11,1:12"`.
pub fn parse_ranges(s: &str) -> Result<Vec<BlockRange>> {
    s.split(',').map(str::parse).collect()
}

/// Which blocks of each part the stack uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Layers {
    /// The seed's shorthands: without `use_last_layer` every part but the last loses its last
    /// block; without `use_first_layer` every part but the first loses its first block.
    Flags {
        use_first_layer: bool,
        use_last_layer: bool,
    },
    /// One explicit range per part.
    Ranges(Vec<BlockRange>),
}

impl Layers {
    /// The range of every part, for parts of `depths` blocks.
    pub fn ranges(&self, depths: &[i64]) -> Vec<BlockRange> {
        match self {
            Layers::Ranges(r) => r.clone(),
            Layers::Flags {
                use_first_layer,
                use_last_layer,
            } => flag_ranges(*use_first_layer, *use_last_layer, depths),
        }
    }
}

/// The ranges the seed's two flags give for parts of `depths` blocks.
pub fn flag_ranges(use_first_layer: bool, use_last_layer: bool, depths: &[i64]) -> Vec<BlockRange> {
    let n = depths.len();
    depths
        .iter()
        .enumerate()
        .map(|(i, &depth)| {
            let start = if i > 0 && !use_first_layer { 1 } else { 0 };
            let end = if i + 1 < n && !use_last_layer {
                depth - 1
            } else {
                depth
            };
            BlockRange::new(start, end)
        })
        .collect()
}

/// The seed's flags that give exactly `ranges`, if any combination does (so results of
/// explicit ranges can still be grouped by the seed's columns).
pub fn flags_of(ranges: &[BlockRange], depths: &[i64]) -> Option<(bool, bool)> {
    [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .find(|&(f, l)| flag_ranges(f, l, depths) == ranges)
}

/// The three boundary norms of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackNorms {
    /// On the embeddings `W[idx]`, before the first part.
    pub norm_wte: NormKind,
    /// On the last part's output, before the head.
    pub norm_lm_head: NormKind,
    /// On the residual stream before every part after the first.
    pub norm_inter_model: NormKind,
}

impl Default for StackNorms {
    /// The seed's stacking defaults.
    fn default() -> Self {
        StackNorms {
            norm_wte: NormKind::None,
            norm_lm_head: NormKind::RmsNorm,
            norm_inter_model: NormKind::None,
        }
    }
}

/// A stack as a researcher describes it: models (anything `--checkpoint` accepts; the same
/// model may repeat), which blocks of each, and the boundary norms. Embedding and head come
/// from the first part's model.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSpec {
    pub models: Vec<String>,
    pub layers: Layers,
    pub norms: StackNorms,
    /// The weights' SHA-256 a saved spec recorded for each part (checked when present).
    pub sha256: Vec<Option<String>>,
}

/// A spec file: the norms, the seed's flags or one range per part, and the parts.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default)]
    norm_wte: Option<NormKind>,
    #[serde(default)]
    norm_lm_head: Option<NormKind>,
    #[serde(default)]
    norm_inter_model: Option<NormKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_first_layer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_last_layer: Option<bool>,
    #[serde(default)]
    parts: Vec<PartFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartFile {
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    end: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

impl StackSpec {
    /// Refuses what no stack can be, whatever the models: fewer than two parts, or a range
    /// count that does not match the parts.
    pub fn check_shape(&self) -> Result<()> {
        if self.models.len() < 2 {
            bail!(
                "a stack needs at least two parts, got {}{}",
                self.models.len(),
                if self.models.len() == 1 {
                    format!(" (`{}`); the same model may be given twice", self.models[0])
                } else {
                    String::new()
                }
            );
        }
        if let Layers::Ranges(r) = &self.layers {
            if r.len() != self.models.len() {
                bail!(
                    "{} block ranges for {} models: give one start:end range per model, in order",
                    r.len(),
                    self.models.len()
                );
            }
        }
        Ok(())
    }

    /// Reads a spec from TOML text; `source` names it in errors.
    pub fn from_toml_str(text: &str, source: &str) -> Result<StackSpec> {
        let f: SpecFile = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{source}: invalid stack spec: {e}"))?;
        let d = StackNorms::default();
        let norms = StackNorms {
            norm_wte: f.norm_wte.unwrap_or(d.norm_wte),
            norm_lm_head: f.norm_lm_head.unwrap_or(d.norm_lm_head),
            norm_inter_model: f.norm_inter_model.unwrap_or(d.norm_inter_model),
        };
        let with_range = f
            .parts
            .iter()
            .filter(|p| p.start.is_some() || p.end.is_some())
            .count();
        let layers = if with_range == 0 {
            Layers::Flags {
                use_first_layer: f.use_first_layer.unwrap_or(false),
                use_last_layer: f.use_last_layer.unwrap_or(false),
            }
        } else {
            if f.use_first_layer.is_some() || f.use_last_layer.is_some() {
                bail!("{source}: parts with start/end replace use_first_layer/use_last_layer; give one or the other");
            }
            let mut ranges = Vec::new();
            for (i, p) in f.parts.iter().enumerate() {
                match (p.start, p.end) {
                    (Some(s), Some(e)) => ranges.push(BlockRange::new(s, e)),
                    _ => bail!(
                        "{source}: part {} (`{}`) needs both start and end when any part gives a range",
                        i + 1,
                        p.model
                    ),
                }
            }
            Layers::Ranges(ranges)
        };
        let spec = StackSpec {
            models: f.parts.iter().map(|p| p.model.clone()).collect(),
            sha256: f.parts.iter().map(|p| p.sha256.clone()).collect(),
            layers,
            norms,
        };
        spec.check_shape().with_context(|| source.to_string())?;
        Ok(spec)
    }

    pub fn load(path: &Path) -> Result<StackSpec> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read stack spec {}", path.display()))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    pub fn to_toml_string(&self) -> String {
        let (use_first_layer, use_last_layer, ranges) = match &self.layers {
            Layers::Flags {
                use_first_layer,
                use_last_layer,
            } => (Some(*use_first_layer), Some(*use_last_layer), None),
            Layers::Ranges(r) => (None, None, Some(r)),
        };
        let f = SpecFile {
            norm_wte: Some(self.norms.norm_wte),
            norm_lm_head: Some(self.norms.norm_lm_head),
            norm_inter_model: Some(self.norms.norm_inter_model),
            use_first_layer,
            use_last_layer,
            parts: self
                .models
                .iter()
                .enumerate()
                .map(|(i, m)| PartFile {
                    model: m.clone(),
                    start: ranges.map(|r| r[i].start),
                    end: ranges.map(|r| r[i].end),
                    sha256: self.sha256.get(i).cloned().flatten(),
                })
                .collect(),
        };
        format!(
            "# A stack: embedding and head from the first part; ranges are half-open [start, end).\n{}",
            toml::to_string_pretty(&f).expect("a stack spec serialises to TOML")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_shorthands_for_ranges() {
        let d = [12, 12];
        assert_eq!(
            flag_ranges(false, false, &d),
            [BlockRange::new(0, 11), BlockRange::new(1, 12)]
        );
        assert_eq!(
            flag_ranges(true, true, &d),
            [BlockRange::new(0, 12), BlockRange::new(0, 12)]
        );
        // A middle part loses both ends without the flags.
        assert_eq!(
            flag_ranges(false, false, &[4, 6, 8])[1],
            BlockRange::new(1, 5)
        );
        assert_eq!(flag_ranges(false, true, &[4, 6])[0], BlockRange::new(0, 4));
        assert_eq!(
            flags_of(&parse_ranges("0:11, 0:12").unwrap(), &d),
            Some((true, false))
        );
        assert_eq!(flags_of(&parse_ranges("2:5,0:12").unwrap(), &d), None);
    }

    #[test]
    fn a_spec_round_trips_through_toml() {
        for layers in [
            Layers::Flags {
                use_first_layer: true,
                use_last_layer: false,
            },
            Layers::Ranges(parse_ranges("0:3,1:4,0:2").unwrap()),
        ] {
            let spec = StackSpec {
                models: vec!["a".into(), "b".into(), "a".into()],
                layers,
                norms: StackNorms {
                    norm_wte: NormKind::RmsNorm,
                    norm_lm_head: NormKind::LayerNorm,
                    norm_inter_model: NormKind::RmsNorm,
                },
                sha256: vec![Some("ab".into()), None, Some("ab".into())],
            };
            let text = spec.to_toml_string();
            assert_eq!(
                StackSpec::from_toml_str(&text, "s.toml").unwrap(),
                spec,
                "{text}"
            );
        }
    }

    #[test]
    fn spec_files_that_mix_ranges_and_flags_or_have_one_part_are_refused() {
        let e = StackSpec::from_toml_str(
            "use_last_layer = true\n[[parts]]\nmodel = \"a\"\nstart = 0\nend = 2\n[[parts]]\nmodel = \"b\"\nstart = 0\nend = 2\n",
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("s.toml: parts with start/end replace use_first_layer/use_last_layer"),
            "{e}"
        );
        let e = StackSpec::from_toml_str("[[parts]]\nmodel = \"a\"\n", "s.toml").unwrap_err();
        assert!(
            format!("{e:#}").contains("a stack needs at least two parts, got 1"),
            "{e:#}"
        );
        let e = StackSpec::from_toml_str("[[parts]]\nmodel = \"a\"\nlayers = 3\n", "s.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.toml: invalid stack spec") && e.contains("layers"),
            "{e}"
        );
        let e = StackSpec::from_toml_str(
            "[[parts]]\nmodel = \"a\"\nstart = 0\nend = 2\n[[parts]]\nmodel = \"b\"\n",
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("part 2 (`b`) needs both start and end"), "{e}");
    }
}
