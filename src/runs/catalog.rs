//! Every checkpoint under a checkpoint dir, grouped by lineage: what the lab's checkpoint
//! browser shows. A run trained `from_model` sits under the run whose `W` it shares (matched
//! by the `W` hash its metadata records, or else by the name it was started from); loose
//! seed-format `.safetensors` files and saved stacks sit at the top. Reading is cheap (the
//! metadata and a safetensors header, never the weights) and never modifies anything; an
//! unreadable checkpoint is listed with the reason.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::checkpoint::{list_checkpoints, Checkpoint, CheckpointMeta, META_FILE};
use super::run_dir::RunDir;

/// What the browser shows of a readable checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CkptInfo {
    pub n_layer: i64,
    pub n_embd: i64,
    pub n_head: Option<i64>,
    pub vocab_size: i64,
    /// Norms it was trained with (unknown for seed files).
    pub norm_wte: Option<String>,
    pub norm_lm_head: Option<String>,
    pub seed: Option<i64>,
    pub step: Option<i64>,
    pub total_steps: Option<i64>,
    pub tokens_seen: Option<i64>,
    pub last_val_loss: Option<f64>,
    pub created: Option<String>,
    /// SHA-256 of `W` as its metadata records it (native checkpoints).
    pub wte_sha256: Option<String>,
    /// The parent whose `W` it shares, as named when the run started.
    pub from_model: Option<String>,
    pub from_model_sha256: Option<String>,
    pub init_from: Option<String>,
    /// Blocks whose layout differs from the shape's (a saved stack, or trained from one).
    pub stacked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `RUN/step_NNNNNN`.
    Checkpoint,
    /// A `.safetensors` file in the seed's naming.
    SeedFile,
    /// A checkpoint folder directly under the root (e.g. `stack --save`).
    Loose,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The path `stack --models` takes.
    pub path: PathBuf,
    /// `run/step_000120`, or the file or folder name.
    pub label: String,
    pub kind: Kind,
    pub run: Option<String>,
    pub size_bytes: u64,
    pub info: std::result::Result<CkptInfo, String>,
}

/// A node of the lineage tree: a run (its checkpoints, then the runs trained from it) or a
/// loose entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique among siblings: the path.
    pub id: String,
    pub label: String,
    /// The entry a leaf stands for (index into `entries`); a run node has none.
    pub entry: Option<usize>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub entries: Vec<Entry>,
    pub tree: Vec<Node>,
}

fn info_of_meta(meta: &CheckpointMeta) -> CkptInfo {
    CkptInfo {
        n_layer: meta.model.n_layer,
        n_embd: meta.model.n_embd,
        n_head: Some(meta.model.n_head),
        vocab_size: meta.model.vocab_size,
        norm_wte: Some(meta.model.norm_wte.to_string()),
        norm_lm_head: Some(meta.model.norm_lm_head.to_string()),
        seed: Some(meta.seed),
        step: Some(meta.step),
        total_steps: Some(meta.total_steps),
        tokens_seen: Some(meta.tokens_seen),
        last_val_loss: meta.val_loss_history.last().map(|v| v.val_loss),
        created: Some(meta.created_at.clone()),
        wte_sha256: Some(meta.wte_sha256.clone()),
        from_model: meta.from_model.as_ref().map(|l| l.name.clone()),
        from_model_sha256: meta.from_model.as_ref().map(|l| l.wte_sha256.clone()),
        init_from: meta.init_from.as_ref().map(|l| l.name.clone()),
        stacked: !meta.blocks.is_empty(),
    }
}

/// The shape of a seed-format file from its safetensors header alone.
pub fn seed_file_info(path: &Path) -> Result<CkptInfo> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: too short for a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!(
            "{}: not a safetensors file (header of {n} bytes)",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: its safetensors header is cut short", path.display()))?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("{}: its safetensors header is not JSON", path.display()))?;
    let mut blocks = std::collections::BTreeSet::new();
    let mut wte: Option<Vec<i64>> = None;
    for (name, v) in &header {
        let name = name.strip_prefix("_orig_mod.").unwrap_or(name);
        if let Some(rest) = name.strip_prefix("transformer.h.") {
            if let Some(i) = rest.split('.').next().and_then(|s| s.parse::<i64>().ok()) {
                blocks.insert(i);
            }
        }
        if name == crate::model::gpt::WTE || (wte.is_none() && name == "lm_head.weight") {
            wte = v["shape"]
                .as_array()
                .map(|a| a.iter().filter_map(|d| d.as_i64()).collect());
        }
    }
    let Some(shape) = wte.filter(|s| s.len() == 2) else {
        bail!(
            "{}: no embedding matrix {}: not a checkpoint of the seed's GPT",
            path.display(),
            crate::model::gpt::WTE
        );
    };
    Ok(CkptInfo {
        n_layer: blocks.len() as i64,
        n_embd: shape[1],
        n_head: None,
        vocab_size: shape[0],
        norm_wte: None,
        norm_lm_head: None,
        seed: None,
        step: None,
        total_steps: None,
        tokens_seen: None,
        last_val_loss: None,
        created: None,
        wte_sha256: None,
        from_model: None,
        from_model_sha256: None,
        init_from: None,
        stacked: false,
    })
}

fn native(path: &Path, label: String, kind: Kind, run: Option<String>) -> Entry {
    Entry {
        path: path.to_path_buf(),
        label,
        kind,
        run,
        size_bytes: super::disk::disk_size(path),
        info: Checkpoint::open(path)
            .map(|c| info_of_meta(&c.meta))
            .map_err(|e| format!("{e:#}")),
    }
}

/// Step folders that look like checkpoints but are not valid ones (no or bad metadata):
/// listed so a person sees why they are missing from `stack`.
fn broken_step_folders(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .map(|n| n.to_string_lossy().starts_with("step_"))
                    .unwrap_or(false)
                && !p.join(META_FILE).is_file()
        })
        .collect();
    v.sort();
    v
}

impl Catalog {
    /// Reads the checkpoint dir `root`.
    pub fn scan(root: &Path) -> Catalog {
        let mut entries = Vec::new();
        // Run name -> its entries' indices, in step order.
        let mut runs: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut loose = Vec::new();
        let mut dirents: Vec<PathBuf> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .map(|n| n.to_string_lossy().starts_with('.'))
                    .unwrap_or(true)
            })
            .collect();
        dirents.sort();
        for p in dirents {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_file() {
                if p.extension().map(|e| e == "safetensors").unwrap_or(false) {
                    loose.push(entries.len());
                    entries.push(Entry {
                        size_bytes: super::disk::disk_size(&p),
                        info: seed_file_info(&p).map_err(|e| format!("{e:#}")),
                        path: p,
                        label: name,
                        kind: Kind::SeedFile,
                        run: None,
                    });
                }
            } else if p.join(META_FILE).is_file() {
                loose.push(entries.len());
                entries.push(native(&p, name, Kind::Loose, None));
            } else if RunDir::is_run_dir(&p) || !list_checkpoints(&p).is_empty() {
                let mut idx = Vec::new();
                let mut steps = list_checkpoints(&p);
                steps.extend(broken_step_folders(&p));
                steps.sort();
                for c in steps {
                    let label = format!("{name}/{}", c.file_name().unwrap().to_string_lossy());
                    idx.push(entries.len());
                    entries.push(native(&c, label, Kind::Checkpoint, Some(name.clone())));
                }
                runs.insert(name, idx);
            }
        }
        let tree = build_tree(root, &entries, &runs, &loose);
        Catalog { entries, tree }
    }

    /// The entry with this path.
    pub fn find(&self, path: &Path) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }
}

/// The run a run's `W` came from: the run of the checkpoint whose `W` hash matches, or of
/// the path it was started from.
fn parent_run(
    root: &Path,
    child: &str,
    entries: &[Entry],
    idx: &[usize],
    by_wte: &HashMap<&str, &str>,
) -> Option<String> {
    let info = idx.iter().find_map(|&i| entries[i].info.as_ref().ok())?;
    if let Some(sha) = info.from_model_sha256.as_deref() {
        if let Some(run) = by_wte.get(sha) {
            if *run != child {
                return Some(run.to_string());
            }
        }
    }
    let name = info.from_model.as_deref()?;
    let p = Path::new(name);
    let rel = p.strip_prefix(root).unwrap_or(p);
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    (first != child && root.join(&first).is_dir()).then_some(first)
}

fn build_tree(
    root: &Path,
    entries: &[Entry],
    runs: &BTreeMap<String, Vec<usize>>,
    loose: &[usize],
) -> Vec<Node> {
    let mut by_wte: HashMap<&str, &str> = HashMap::new();
    for (run, idx) in runs {
        for &i in idx {
            if let Ok(CkptInfo {
                wte_sha256: Some(sha),
                ..
            }) = &entries[i].info
            {
                by_wte.entry(sha.as_str()).or_insert(run.as_str());
            }
        }
    }
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (run, idx) in runs {
        match parent_run(root, run, entries, idx, &by_wte) {
            Some(p) if runs.contains_key(&p) => children.entry(p).or_default().push(run.clone()),
            _ => roots.push(run.clone()),
        }
    }
    // A lineage cycle (hand-edited metadata) would hide its runs: put them at the top.
    let mut placed = std::collections::HashSet::new();
    let mut tree: Vec<Node> = roots
        .iter()
        .map(|r| run_node(r, entries, runs, &children, &mut placed))
        .collect();
    for r in runs.keys() {
        if !placed.contains(r) {
            tree.push(run_node(r, entries, runs, &children, &mut placed));
        }
    }
    for &i in loose {
        tree.push(leaf(entries, i));
    }
    tree
}

fn leaf(entries: &[Entry], i: usize) -> Node {
    let e = &entries[i];
    let label = match e.kind {
        Kind::Checkpoint => e
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| e.label.clone()),
        _ => e.label.clone(),
    };
    Node {
        id: e.path.display().to_string(),
        label,
        entry: Some(i),
        children: vec![],
    }
}

fn run_node(
    run: &str,
    entries: &[Entry],
    runs: &BTreeMap<String, Vec<usize>>,
    children: &BTreeMap<String, Vec<String>>,
    placed: &mut std::collections::HashSet<String>,
) -> Node {
    placed.insert(run.to_string());
    let idx = &runs[run];
    let mut kids: Vec<Node> = idx.iter().map(|&i| leaf(entries, i)).collect();
    for c in children.get(run).into_iter().flatten() {
        if !placed.contains(c) {
            kids.push(run_node(c, entries, runs, children, placed));
        }
    }
    let path = idx
        .first()
        .and_then(|&i| entries[i].path.parent().map(|p| p.display().to_string()))
        .unwrap_or_else(|| run.to_string());
    Node {
        id: path,
        label: run.to_string(),
        entry: None,
        children: kids,
    }
}
