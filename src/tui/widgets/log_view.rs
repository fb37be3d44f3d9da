//! The tail of a log file: read incrementally, at most `cap` lines kept in memory; follow
//! the end or hold still, and search.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::block;
use crate::tui::theme::Theme;

/// Bytes read from the end of a log the first time it is opened.
const FIRST_READ: u64 = 256 * 1024;

#[derive(Debug, Default)]
pub struct LogTail {
    pub path: PathBuf,
    pub lines: VecDeque<String>,
    pub cap: usize,
    offset: u64,
    partial: String,
    ino: u64,
    /// Lines up from the end when not following.
    pub scroll: usize,
    pub follow: bool,
    pub search: String,
}

impl LogTail {
    pub fn new(path: &Path, cap: usize) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            cap: cap.max(1),
            follow: true,
            ..Default::default()
        }
    }

    /// Reads what was appended since the last call; returns whether lines were added.
    pub fn refresh(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(&self.path) else {
            let had = !self.lines.is_empty();
            self.lines.clear();
            self.offset = 0;
            return had;
        };
        let mut changed = false;
        if meta.len() < self.offset || meta.ino() != self.ino {
            // Replaced or truncated: start over.
            changed = !self.lines.is_empty();
            self.lines.clear();
            self.partial.clear();
            self.ino = meta.ino();
            self.offset = meta.len().saturating_sub(FIRST_READ);
        }
        if meta.len() == self.offset {
            return changed;
        }
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return changed;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return changed;
        }
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_err() {
            return changed;
        }
        self.offset += bytes.len() as u64;
        let text = String::from_utf8_lossy(&bytes);
        let mut text = std::mem::take(&mut self.partial) + &text;
        if !text.ends_with('\n') {
            let cut = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
            self.partial = text.split_off(cut);
        }
        for l in text.lines() {
            // A progress bar's carriage returns: keep what a terminal would show last.
            let l = l.rsplit('\r').next().unwrap_or(l);
            self.lines.push_back(l.to_string());
            changed = true;
        }
        while self.lines.len() > self.cap {
            self.lines.pop_front();
        }
        changed
    }

    /// Scrolls to the latest line (counting from the end) that holds the search text.
    pub fn find_previous(&mut self) -> bool {
        if self.search.is_empty() {
            return false;
        }
        let n = self.lines.len();
        let start = if self.follow { 0 } else { self.scroll + 1 };
        for back in start..n {
            if self.lines[n - 1 - back].contains(&self.search) {
                self.follow = false;
                self.scroll = back;
                return true;
            }
        }
        false
    }

    pub fn scroll_up(&mut self, by: usize) {
        self.follow = false;
        self.scroll = (self.scroll + by).min(self.lines.len().saturating_sub(1));
    }

    pub fn scroll_down(&mut self, by: usize) {
        self.scroll = self.scroll.saturating_sub(by);
        if self.scroll == 0 {
            self.follow = true;
        }
    }
}

pub fn draw(f: &mut Frame, area: Rect, title: &str, log: &LogTail, theme: &Theme) {
    let height = area.height.saturating_sub(2) as usize;
    let end = log
        .lines
        .len()
        .saturating_sub(if log.follow { 0 } else { log.scroll });
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = log
        .lines
        .range(start..end)
        .map(|l| {
            if !log.search.is_empty() && l.contains(&log.search) {
                Line::from(Span::styled(
                    l.clone(),
                    Style::default().fg(theme.warn).add_modifier(Modifier::BOLD),
                ))
            } else {
                Line::from(Span::styled(l.clone(), Style::default().fg(theme.text)))
            }
        })
        .collect();
    let mut title = title.to_string();
    if !log.follow {
        title.push_str(" · paused");
    }
    if !log.search.is_empty() {
        title.push_str(&format!(" · /{}", log.search));
    }
    let body = if lines.is_empty() {
        let note = if log.path.as_os_str().is_empty() {
            "no run selected".to_string()
        } else {
            format!("{} is empty or missing", log.path.display())
        };
        vec![Line::from(Span::styled(
            note,
            Style::default().fg(theme.dim),
        ))]
    } else {
        lines
    };
    f.render_widget(Paragraph::new(body).block(block(&title, theme)), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::widgets::testing::render;
    use std::io::Write;

    #[test]
    fn tail_is_incremental_capped_and_searchable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.log");
        let mut log = LogTail::new(&p, 5);
        assert!(!log.refresh());
        let mut f = std::fs::File::create(&p).unwrap();
        for i in 0..8 {
            writeln!(f, "line {i}").unwrap();
        }
        write!(f, "half").unwrap();
        assert!(log.refresh());
        assert_eq!(
            log.lines,
            ["line 3", "line 4", "line 5", "line 6", "line 7"]
        );
        writeln!(f, " a line\rprogress 2").unwrap();
        assert!(log.refresh());
        assert_eq!(log.lines.back().unwrap(), "progress 2");
        assert!(!log.refresh());
        log.search = "line 4".into();
        assert!(log.find_previous());
        assert_eq!((log.follow, log.scroll), (false, 4));
        let s = render(40, 4, |f| {
            draw(f, f.area(), "log", &log, &Theme::shipped_default())
        });
        assert!(
            s.contains("paused") && s.contains("line 4") && !s.contains("line 5"),
            "{s}"
        );
        log.scroll_down(10);
        assert!(log.follow);
        let s = render(40, 4, |f| {
            draw(f, f.area(), "log", &log, &Theme::shipped_default())
        });
        assert!(s.contains("progress 2"), "{s}");
    }
}
