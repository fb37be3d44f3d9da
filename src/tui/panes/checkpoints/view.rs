//! The Checkpoints pane's drawing: the lineage tree's items, the selected checkpoint's
//! facts, and the two-panel layout.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;
use tui_tree_widget::{Tree, TreeItem};

use super::CheckpointsPane;
use crate::runs::catalog::{Entry, Node};
use crate::tui::theme::Theme;
use crate::tui::widgets::{self, block, clip};

impl CheckpointsPane {
    pub(super) fn items(&self, nodes: &[Node], theme: &Theme) -> Vec<TreeItem<'static, String>> {
        nodes
            .iter()
            .filter_map(|n| {
                let mut spans = Vec::new();
                if let Some(i) = n.entry {
                    let e = &self.catalog.entries[i];
                    match self.marks.iter().position(|m| *m == e.path) {
                        Some(k) => spans.push(Span::styled(
                            format!("[{}] ", k + 1),
                            Style::default()
                                .fg(theme.accent)
                                .add_modifier(Modifier::BOLD),
                        )),
                        None => spans.push(Span::raw("    ")),
                    }
                    spans.push(Span::styled(
                        n.label.clone(),
                        Style::default().fg(theme.text),
                    ));
                    match &e.info {
                        Ok(info) => {
                            if let Some(v) = info.last_val_loss {
                                spans.push(Span::styled(
                                    format!("  val {v:.4}"),
                                    Style::default().fg(theme.dim),
                                ));
                            }
                        }
                        Err(_) => spans.push(Span::styled(
                            "  unreadable",
                            Style::default().fg(theme.error),
                        )),
                    }
                } else {
                    spans.push(Span::styled(
                        n.label.clone(),
                        Style::default()
                            .fg(theme.accent)
                            .add_modifier(Modifier::BOLD),
                    ));
                }
                let text = Line::from(spans);
                if n.children.is_empty() {
                    Some(TreeItem::new_leaf(n.id.clone(), text))
                } else {
                    TreeItem::new(n.id.clone(), text, self.items(&n.children, theme)).ok()
                }
            })
            .collect()
    }

    pub(super) fn details(&self, e: &Entry) -> Vec<(String, String)> {
        let mut rows = vec![("path".to_string(), e.path.display().to_string())];
        match &e.info {
            Err(why) => rows.push(("unreadable".into(), why.clone())),
            Ok(i) => {
                let heads = i.n_head.map(|h| format!(", {h} heads")).unwrap_or_default();
                rows.push((
                    "shape".into(),
                    format!(
                        "{} layers x {} wide{heads}, vocab {}{}",
                        i.n_layer,
                        i.n_embd,
                        i.vocab_size,
                        if i.stacked { " (stacked blocks)" } else { "" }
                    ),
                ));
                let norms = match (&i.norm_wte, &i.norm_lm_head) {
                    (Some(w), Some(h)) => format!("norm_wte {w}, norm_lm_head {h}"),
                    _ => "unknown (a seed file: give them when stacking)".into(),
                };
                rows.push(("trained norms".into(), norms));
                let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or("-".into());
                rows.push(("seed".into(), opt(i.seed)));
                rows.push((
                    "step".into(),
                    format!("{} / {}", opt(i.step), opt(i.total_steps)),
                ));
                rows.push((
                    "tokens seen".into(),
                    i.tokens_seen.map(count).unwrap_or("-".into()),
                ));
                rows.push((
                    "last val loss".into(),
                    i.last_val_loss
                        .map(|v| format!("{v:.4}"))
                        .unwrap_or("-".into()),
                ));
                rows.push((
                    "created".into(),
                    i.created
                        .as_deref()
                        .map(|c| when(c, chrono::Local::now()))
                        .unwrap_or("-".into()),
                ));
                rows.push((
                    "parent (W)".into(),
                    i.from_model
                        .clone()
                        .unwrap_or("none (trains its own W)".into()),
                ));
                if let Some(init) = &i.init_from {
                    rows.push(("init_from".into(), init.clone()));
                }
            }
        }
        rows.push((
            "size on disk".into(),
            crate::runs::disk::format_size(e.size_bytes),
        ));
        let sha = self.sha.lock().expect("sha cache").get(&e.path).cloned();
        rows.push((
            "sha256".into(),
            match sha {
                Some(Some(s)) => s,
                _ => "computing...".into(),
            },
        ));
        rows
    }

    pub(super) fn draw_pane(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let narrow = area.width < 100;
        let [list_area, info_area] = if narrow {
            Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area)
        } else {
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area)
        };
        self.draw_tree(f, list_area, theme);
        let lines = self.info_lines(info_area.width.saturating_sub(18) as usize, theme);
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(block("Selected", theme)),
            info_area,
        );
    }

    /// The list's title: the count, the filter being typed or set, and the marks.
    fn tree_title(&self) -> String {
        let mut title = format!("Checkpoints · {}", self.catalog.entries.len());
        if self.filtering || !self.filter.is_empty() {
            title.push_str(&format!(" · /{}", self.filter));
            if self.filtering {
                title.push('_');
            }
        }
        if !self.marks.is_empty() {
            title.push_str(&format!(" · {} marked", self.marks.len()));
        }
        title
    }

    /// The lineage tree (its first node selected when nothing is), or what to do when it
    /// is empty.
    fn draw_tree(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let nodes = self.visible();
        if self.state.selected().is_empty() {
            if let Some(n) = nodes.first() {
                self.state.select(vec![n.id.clone()]);
            }
        }
        let items = self.items(&nodes, theme);
        let title = self.tree_title();
        if items.is_empty() {
            let text = if self.catalog.entries.is_empty() {
                format!(
                    "no checkpoints in {} yet: train a run (Runs pane, n)",
                    self.root.display()
                )
            } else {
                "nothing matches the filter (Esc clears it)".to_string()
            };
            f.render_widget(
                Paragraph::new(text)
                    .style(Style::default().fg(theme.dim))
                    .wrap(Wrap { trim: true })
                    .block(block(&title, theme)),
                area,
            );
        } else if let Ok(tree) = Tree::new(&items) {
            let (open, closed) = if theme.ascii {
                ("v ", "> ")
            } else {
                ("▼ ", "▶ ")
            };
            let tree = tree
                .block(block(&title, theme))
                .highlight_style(widgets::selected_style(theme))
                .node_open_symbol(open)
                .node_closed_symbol(closed)
                .node_no_children_symbol("  ");
            f.render_stateful_widget(tree, area, &mut self.state);
        }
    }

    /// The checkpoint whose facts are shown, and a heading when it stands for a run: a
    /// run's row shows its latest checkpoint, so the facts are there from the start.
    fn shown(&self) -> (Option<Entry>, Option<String>) {
        match (self.selected().cloned(), self.selected_run()) {
            (Some(e), _) => (Some(e), None),
            (None, Some((run, own))) => {
                let heading = match own.last() {
                    Some(_) => format!("{run}: {} checkpoint(s), the latest below", own.len()),
                    None => format!("{run}: no checkpoints of its own"),
                };
                (own.last().map(|e| (*e).clone()), Some(heading))
            }
            (None, None) => (None, None),
        }
    }

    /// The "Selected" panel: the shown checkpoint's facts (values clipped to `w`), the
    /// marks in stacking order, and the last message.
    fn info_lines(&mut self, w: usize, theme: &Theme) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        let (sel, heading) = self.shown();
        if let Some(h) = heading {
            lines.push(Line::styled(
                clip(&h, w + 16),
                Style::default().fg(theme.dim),
            ));
        }
        if let Some(e) = &sel {
            self.want_sha(&e.path);
            for (k, v) in self.details(e) {
                let unreadable = k == "unreadable";
                let style = Style::default().fg(if unreadable { theme.error } else { theme.text });
                lines.push(Line::from(vec![
                    Span::styled(format!("{k:<14} "), Style::default().fg(theme.dim)),
                    Span::styled(if unreadable { v } else { clip(&v, w.max(8)) }, style),
                ]));
            }
        } else if lines.is_empty() {
            lines.push(Line::styled(
                "select a checkpoint for its facts",
                Style::default().fg(theme.dim),
            ));
        }
        if !self.marks.is_empty() {
            lines.push(Line::raw(""));
            lines.push(Line::styled(
                "marked (bottom of the stack first):",
                Style::default().fg(theme.dim),
            ));
            for (i, m) in self.marks.iter().enumerate() {
                let label = self
                    .catalog
                    .find(m)
                    .map(|e| e.label.clone())
                    .unwrap_or_else(|| m.display().to_string());
                lines.push(Line::styled(
                    format!(" {}. {label}", i + 1),
                    Style::default().fg(theme.accent),
                ));
            }
        }
        if let Some(m) = &self.message {
            lines.push(Line::raw(""));
            lines.push(Line::styled(m.clone(), Style::default().fg(theme.warn)));
        }
        lines
    }
}

/// `1,228,800 (1.23 M)`: exact, and at a glance.
fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if n < 0 { "-" } else { "" };
    let a = n.unsigned_abs() as f64;
    let short = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .iter()
        .find(|(unit, _)| a >= *unit)
        .map(|(unit, name)| format!(" ({sign}{:.2} {name})", a / unit))
        .unwrap_or_default();
    format!("{sign}{grouped}{short}")
}

/// An RFC 3339 time as local `2026-11-29 20:36:17 (5m ago)`; anything else as written.
fn when(rfc3339: &str, now: chrono::DateTime<chrono::Local>) -> String {
    match chrono::DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => {
            let t = t.with_timezone(&chrono::Local);
            let ago = (now - t).num_seconds() as f64;
            format!(
                "{} ({} ago)",
                t.format("%Y-%m-%d %H:%M:%S"),
                crate::tui::widgets::run_table::age(ago)
            )
        }
        Err(_) => rfc3339.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_read_at_a_glance() {
        assert_eq!(count(1_228_800), "1,228,800 (1.23 M)");
        assert_eq!(count(999), "999");
        assert_eq!(count(4_096), "4,096 (4.10 k)");
        assert_eq!(count(10_485_760_000), "10,485,760,000 (10.49 G)");
        let t = "2026-11-29T20:36:17.177139124+00:00";
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T20:41:20+00:00")
            .unwrap()
            .with_timezone(&chrono::Local);
        let local = chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        assert_eq!(when(t, now), format!("{local} (5m ago)"));
        assert_eq!(when("yesterday", now), "yesterday");
    }
}
