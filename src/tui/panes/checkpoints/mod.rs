//! The Checkpoints pane: every checkpoint under the checkpoint dir as a lineage tree (a run
//! trained `from_model` under the run whose `W` it shares; loose seed files and saved stacks
//! at the top), the selected one's facts, a filter, and marks that go to the stack builder in
//! the order they were made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::Rect;
use ratatui::Frame;
use tui_tree_widget::TreeState;

mod view;

use super::Pane;
use crate::runs::catalog::{Catalog, Entry, Node};
use crate::tui::action::{Action, Handled};
use crate::tui::jobs::Waker;
use crate::tui::theme::Theme;

/// How often the folder is read again without a change of its run folders' times.
const RESCAN_EVERY: Duration = Duration::from_secs(10);

pub struct CheckpointsPane {
    pub root: PathBuf,
    pub catalog: Catalog,
    pub state: TreeState<String>,
    pub filter: String,
    pub filtering: bool,
    /// Marked checkpoints, in the order marked.
    pub marks: Vec<PathBuf>,
    /// SHA-256 of weights files, computed in the background (`None` while running).
    sha: Arc<Mutex<HashMap<PathBuf, Option<String>>>>,
    waker: Waker,
    /// The run folders' modification times at the last scan.
    stamp: Vec<(PathBuf, Option<std::time::SystemTime>)>,
    scanned: Instant,
    pub message: Option<String>,
}

fn folder_stamp(root: &Path) -> Vec<(PathBuf, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.path(), e.metadata().ok().and_then(|m| m.modified().ok())))
        .collect();
    v.push((
        root.to_path_buf(),
        std::fs::metadata(root).ok().and_then(|m| m.modified().ok()),
    ));
    v.sort();
    v
}

fn matches(node: &Node, catalog: &Catalog, filter: &str) -> bool {
    let f = filter.to_lowercase();
    node.label.to_lowercase().contains(&f)
        || node
            .entry
            .map(|i| catalog.entries[i].label.to_lowercase().contains(&f))
            .unwrap_or(false)
        || node.children.iter().any(|c| matches(c, catalog, filter))
}

impl CheckpointsPane {
    pub fn new(root: &Path, waker: Waker) -> CheckpointsPane {
        let mut p = CheckpointsPane {
            root: root.to_path_buf(),
            catalog: Catalog::default(),
            state: TreeState::default(),
            filter: String::new(),
            filtering: false,
            marks: Vec::new(),
            sha: Arc::default(),
            waker,
            stamp: Vec::new(),
            scanned: Instant::now(),
            message: None,
        };
        p.rescan();
        p
    }

    /// Reads the folder again; keeps the selection and what is open.
    pub fn rescan(&mut self) {
        self.catalog = Catalog::scan(&self.root);
        self.stamp = folder_stamp(&self.root);
        self.scanned = Instant::now();
        // Open every run the first time, so lineage is visible at once.
        if self.state.opened().is_empty() {
            fn open_all(state: &mut TreeState<String>, nodes: &[Node], path: &mut Vec<String>) {
                for n in nodes {
                    path.push(n.id.clone());
                    if !n.children.is_empty() {
                        state.open(path.clone());
                        open_all(state, &n.children, path);
                    }
                    path.pop();
                }
            }
            let tree = self.catalog.tree.clone();
            open_all(&mut self.state, &tree, &mut Vec::new());
        }
        self.marks.retain(|m| m.exists());
    }

    /// The checkpoint under the cursor.
    pub fn selected(&self) -> Option<&Entry> {
        let id = self.state.selected().last()?;
        self.catalog
            .entries
            .iter()
            .find(|e| e.path.display().to_string() == *id)
    }

    /// The run under the cursor (a node that is not itself a checkpoint) and its own
    /// checkpoints, in the tree's order.
    pub fn selected_run(&self) -> Option<(String, Vec<&Entry>)> {
        let mut nodes = &self.catalog.tree;
        let mut node = None;
        for id in self.state.selected() {
            let n = nodes.iter().find(|n| &n.id == id)?;
            nodes = &n.children;
            node = Some(n);
        }
        let node = node.filter(|n| n.entry.is_none())?;
        let own = node
            .children
            .iter()
            .filter_map(|c| c.entry.and_then(|i| self.catalog.entries.get(i)))
            .collect();
        Some((node.label.clone(), own))
    }

    fn visible(&self) -> Vec<Node> {
        if self.filter.is_empty() {
            return self.catalog.tree.clone();
        }
        fn keep(nodes: &[Node], catalog: &Catalog, filter: &str) -> Vec<Node> {
            nodes
                .iter()
                .filter(|n| matches(n, catalog, filter))
                .map(|n| Node {
                    children: keep(&n.children, catalog, filter),
                    ..n.clone()
                })
                .collect()
        }
        keep(&self.catalog.tree, &self.catalog, &self.filter)
    }

    /// Starts hashing the selected checkpoint's weights if not known yet.
    fn want_sha(&self, path: &Path) {
        let mut map = self.sha.lock().expect("sha cache");
        if map.contains_key(path) {
            return;
        }
        map.insert(path.to_path_buf(), None);
        let (sha, waker, path) = (self.sha.clone(), self.waker.clone(), path.to_path_buf());
        std::thread::spawn(move || {
            let file = if path.is_dir() {
                path.join(crate::runs::checkpoint::MODEL_FILE)
            } else {
                path.clone()
            };
            let v = crate::runs::checkpoint::sha256_file(&file)
                .map(|s| s[..12.min(s.len())].to_string())
                .unwrap_or_else(|e| format!("unreadable: {e:#}"));
            sha.lock().expect("sha cache").insert(path, Some(v));
            waker.wake();
        });
    }

    fn toggle_mark(&mut self) {
        let Some(e) = self.selected() else {
            self.message = Some("select a checkpoint (not a run) to mark it".into());
            return;
        };
        if let Err(why) = &e.info {
            self.message = Some(format!("{} cannot be stacked: {why}", e.label));
            return;
        }
        let p = e.path.clone();
        match self.marks.iter().position(|m| *m == p) {
            Some(i) => {
                self.marks.remove(i);
            }
            None => self.marks.push(p),
        }
        self.message = None;
    }
}

impl Pane for CheckpointsPane {
    fn title(&self) -> &str {
        "Checkpoints"
    }

    fn captures_input(&self) -> bool {
        self.filtering
    }

    fn handle_key(&mut self, k: KeyEvent) -> Handled {
        if self.filtering {
            match k.code {
                KeyCode::Enter => self.filtering = false,
                KeyCode::Esc => {
                    self.filtering = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => return Handled::No,
            }
            // The first visible node is selected at the next draw.
            self.state.select(Vec::new());
            return Handled::Yes;
        }
        match k.code {
            KeyCode::Up | KeyCode::Char('k') => {
                self.state.key_up();
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.state.key_down();
            }
            KeyCode::Left | KeyCode::Char('h') => {
                self.state.key_left();
            }
            KeyCode::Right | KeyCode::Char('l') => {
                self.state.key_right();
            }
            KeyCode::Enter => {
                self.state.toggle_selected();
            }
            KeyCode::Home => {
                self.state.select_first();
            }
            KeyCode::End => {
                self.state.select_last();
            }
            KeyCode::Char(' ') => self.toggle_mark(),
            KeyCode::Char('/') => {
                self.filtering = true;
                self.filter.clear();
            }
            KeyCode::Esc if !self.filter.is_empty() => self.filter.clear(),
            KeyCode::Char('c') => {
                self.marks.clear();
                self.message = Some("marks cleared".into());
            }
            KeyCode::Char('R') => self.rescan(),
            KeyCode::Char('b') => {
                if self.marks.is_empty() {
                    self.message =
                        Some("mark checkpoints first (space), bottom of the stack first".into());
                    return Handled::Yes;
                }
                return Handled::Then(Action::SendToBuilder(self.marks.clone()));
            }
            _ => return Handled::No,
        }
        Handled::Yes
    }

    fn update(&mut self, action: &Action) -> bool {
        match action {
            Action::Tick => {
                let stamp = folder_stamp(&self.root);
                if stamp != self.stamp || self.scanned.elapsed() > RESCAN_EVERY {
                    let before = self.catalog.clone();
                    self.rescan();
                    return self.catalog != before;
                }
                // A hash that arrived.
                self.selected()
                    .map(|e| {
                        matches!(
                            self.sha.lock().expect("sha cache").get(&e.path),
                            Some(Some(_))
                        )
                    })
                    .unwrap_or(false)
            }
            _ => false,
        }
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        self.draw_pane(f, area, theme);
    }

    fn keys(&self) -> Vec<(String, String)> {
        [
            ("↑↓ j k", "move"),
            ("← → Enter", "close / open a run"),
            ("space", "mark / unmark for the stack (in order)"),
            ("b", "send the marked checkpoints to the stack builder"),
            ("c", "clear the marks"),
            ("/", "filter (Enter keeps it, Esc clears it)"),
            ("R", "read the checkpoint dir again"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn status_keys(&self) -> String {
        "space mark · b to builder · / filter · c clear marks".into()
    }
}
