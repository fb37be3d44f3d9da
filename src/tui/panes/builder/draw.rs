//! Drawing the stack builder: the parts, the block strip with the seams, the checks, the
//! evaluation's gauge, the results table.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table, Wrap};
use ratatui::Frame;

use super::results::Row as ResultRow;
use super::{BuilderPane, JobKind};
use crate::tui::theme::Theme;
use crate::tui::widgets::{self, block, clip};

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The block strip: `m1:0 m1:1 ║ m2:1 m2:2`, one colour per model, the seams marked.
pub fn strip(p: &BuilderPane, theme: &Theme) -> Line<'static> {
    let d = &p.draft;
    let labels = d.labels();
    let seam = if theme.ascii { " || " } else { " ║ " };
    let mut spans = Vec::new();
    for (i, (l, r)) in labels.iter().zip(d.ranges()).enumerate() {
        if i > 0 {
            spans.push(Span::styled(
                seam,
                Style::default().fg(theme.warn).add_modifier(Modifier::BOLD),
            ));
        }
        let style = Style::default().fg(theme.series[i % theme.series.len()]);
        let blocks: Vec<String> = (r.start..r.end).map(|b| format!("{l}:{b}")).collect();
        let text = if blocks.is_empty() {
            format!("{l}:(none)")
        } else {
            blocks.join(" ")
        };
        spans.push(Span::styled(text, style));
    }
    Line::from(spans)
}

fn parts_view(p: &BuilderPane, f: &mut Frame, area: Rect, theme: &Theme) {
    let d = &p.draft;
    let mut lines: Vec<Line> = Vec::new();
    if d.parts.is_empty() {
        lines.push(Line::styled(
            "no stack yet: in the Checkpoints pane mark two or more checkpoints with space (bottom first), then press b",
            Style::default().fg(theme.dim),
        ));
    } else {
        lines.extend(part_lines(p, area.width, theme));
        lines.extend(settings_lines(p, theme));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("Stack (bottom first)", theme)),
        area,
    );
}

/// A line per part: its label, name, block range and trained norms (the cursor's marked).
fn part_lines(p: &BuilderPane, width: u16, theme: &Theme) -> Vec<Line<'static>> {
    let d = &p.draft;
    let labels = d.labels();
    let longest = d
        .parts
        .iter()
        .map(|p| p.name.chars().count())
        .max()
        .unwrap_or(0);
    let w = longest.min(width.saturating_sub(52) as usize);
    let mut lines = Vec::new();
    for (i, ((part, l), r)) in d.parts.iter().zip(&labels).zip(d.ranges()).enumerate() {
        let cursor = if i == d.selected { "> " } else { "  " };
        let trained = match (&part.info.norm_wte, &part.info.norm_lm_head) {
            (Some(a), Some(b)) => format!("trained {a}/{b}"),
            _ => "trained norms unknown".into(),
        };
        let style = Style::default().fg(theme.series[i % theme.series.len()]);
        let mut line = Line::from(vec![
            Span::raw(cursor),
            Span::styled(format!("{l:<3} "), style.add_modifier(Modifier::BOLD)),
            Span::styled(
                format!("{:<w$}  ", clip(&part.name, w.max(8)), w = w.max(8)),
                Style::default().fg(theme.text),
            ),
            Span::styled(
                format!("blocks {r} of {}  ", part.info.n_layer),
                Style::default().fg(theme.accent),
            ),
            Span::styled(trained, Style::default().fg(theme.dim)),
        ]);
        if i == d.selected {
            line = line.style(widgets::selected_style(theme));
        }
        lines.push(line);
    }
    lines
}

/// The stack's layer flags, norms, block strip, and the checks' problems and warnings.
fn settings_lines(p: &BuilderPane, theme: &Theme) -> Vec<Line<'static>> {
    let d = &p.draft;
    let layers = match d.flags() {
        Some((first, last)) => format!(
            "use_first_layer {} · use_last_layer {}{}",
            on_off(first),
            on_off(last),
            if d.custom.is_some() {
                " (edited ranges)"
            } else {
                ""
            }
        ),
        None => "ranges edited by hand (no flag pair gives them)".into(),
    };
    let mut lines = vec![
        Line::styled(layers, Style::default().fg(theme.text)),
        Line::styled(
            format!(
                "norm_wte {} · norm_lm_head {} · norm_inter_model {}",
                d.norms.norm_wte, d.norms.norm_lm_head, d.norms.norm_inter_model
            ),
            Style::default().fg(theme.text),
        ),
    ];
    let mut s = strip(p, theme);
    s.spans
        .insert(0, Span::styled("blocks ", Style::default().fg(theme.dim)));
    lines.push(s);
    for msg in d.problems() {
        lines.push(Line::styled(
            format!("x {msg}"),
            Style::default().fg(theme.error),
        ));
    }
    for msg in d.warnings() {
        lines.push(Line::styled(
            format!("! {msg}"),
            Style::default().fg(theme.warn),
        ));
    }
    lines
}

fn job_line(p: &BuilderPane, f: &mut Frame, area: Rect, theme: &Theme) {
    let what = match p.job_kind {
        JobKind::Evaluate => "evaluating",
        JobKind::SaveCheckpoint => "evaluating and saving",
        JobKind::Heal => "healing (training the arms)",
    };
    widgets::job_line::draw(
        f,
        area,
        p.job.as_ref(),
        what,
        "tokens",
        p.message.as_ref(),
        theme,
    );
}

fn results_view(p: &BuilderPane, f: &mut Frame, area: Rect, theme: &Theme) {
    let best = super::results::best(&p.rows);
    let title = format!(
        "Results · {} · sorted by {} (o) · J/K Enter reopens · {}",
        p.rows.len(),
        p.sort.as_str(),
        p.results_file.display()
    );
    let title = clip(&title, area.width.saturating_sub(4) as usize);
    let header = TableRow::new(
        [
            "stack",
            "parts",
            "mean",
            "stack-best",
            "F L",
            "norms w/h/i",
            "blocks",
        ]
        .map(|h| Cell::from(h).style(Style::default().fg(theme.dim))),
    );
    // The window over the rows keeps the cursor in view (header and borders take 3 lines).
    let visible = area.height.saturating_sub(3).max(1) as usize;
    let offset = (p.row_cursor + 1).saturating_sub(visible);
    let rows: Vec<TableRow> = p
        .rows
        .iter()
        .enumerate()
        .skip(offset)
        .map(|(i, r)| {
            let mut style = Style::default().fg(theme.text);
            if Some(i) == best {
                style = if theme.no_color {
                    style.add_modifier(Modifier::BOLD | Modifier::REVERSED)
                } else {
                    Style::default().fg(theme.ok).add_modifier(Modifier::BOLD)
                };
            }
            if i == p.row_cursor {
                style = style.patch(widgets::selected_style(theme));
            }
            TableRow::new(result_cells(r)).style(style)
        })
        .collect();
    let empty = rows.is_empty();
    let table = Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Length(13),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(3),
            Constraint::Length(11),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(block(&title, theme));
    f.render_widget(table, area);
    if empty && area.height > 3 {
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1,
        };
        f.render_widget(
            Paragraph::new("no stacks evaluated yet (e evaluates the stack above)")
                .style(Style::default().fg(theme.dim)),
            inner,
        );
    }
}

/// A result's cells: losses, flags as y/n, norms abbreviated, blocks (`!` when warned).
fn result_cells(r: &ResultRow) -> Vec<String> {
    let short = |s: &str| match s {
        "true" => "y",
        "false" => "n",
        _ => "-",
    };
    let norm = |s: &str| match s {
        "rms_norm" => "rms",
        "layer_norm" => "ln",
        "none" => "-",
        _ => "?",
    };
    vec![
        format!("{:.4}", r.val_loss_stack),
        r.val_losses
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        format!("{:.4}", r.mean_val_loss),
        format!("{:+.4}", r.delta_vs_best),
        format!("{} {}", short(&r.use_first_layer), short(&r.use_last_layer)),
        r.norms
            .iter()
            .map(|n| norm(n))
            .collect::<Vec<_>>()
            .join("/"),
        format!(
            "{}{}",
            r.block_list,
            if r.warnings.is_empty() { "" } else { " !" }
        ),
    ]
}

pub fn draw(p: &BuilderPane, f: &mut Frame, area: Rect, theme: &Theme) {
    let d = &p.draft;
    let extra = d.problems().len() + d.warnings().len();
    // Parts, layers, norms, the strip (two lines when long), checks (up to two lines each).
    let want = (d.parts.len().max(1) + 4 + extra * 2 + 2) as u16;
    let top_h = want.min(area.height / 2).max(5);
    let [top, job, bottom] = Layout::vertical([
        Constraint::Length(top_h),
        Constraint::Length(1),
        Constraint::Min(3),
    ])
    .areas(area);
    parts_view(p, f, top, theme);
    job_line(p, f, job, theme);
    results_view(p, f, bottom, theme);
}
