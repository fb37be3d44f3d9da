//! A small form: text fields and choices, edited from the keyboard.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::{block, centered, clip};
use crate::tui::theme::Theme;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    /// The options and the chosen index.
    Choice(Vec<String>, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub key: &'static str,
    pub label: &'static str,
    pub value: Value,
    pub hint: &'static str,
}

impl Field {
    pub fn text(key: &'static str, label: &'static str, v: &str, hint: &'static str) -> Field {
        Field {
            key,
            label,
            value: Value::Text(v.to_string()),
            hint,
        }
    }

    pub fn choice(
        key: &'static str,
        label: &'static str,
        options: Vec<String>,
        hint: &'static str,
    ) -> Field {
        Field {
            key,
            label,
            value: Value::Choice(options, 0),
            hint,
        }
    }

    pub fn get(&self) -> &str {
        match &self.value {
            Value::Text(s) => s,
            Value::Choice(o, i) => o.get(*i).map(String::as_str).unwrap_or(""),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub title: String,
    pub fields: Vec<Field>,
    pub focus: usize,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormResult {
    Editing,
    /// A choice changed (the owner may update other fields).
    Changed,
    Submit,
    Cancel,
}

impl Form {
    pub fn new(title: &str, fields: Vec<Field>) -> Form {
        Form {
            title: title.to_string(),
            fields,
            focus: 0,
            error: None,
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.get())
            .unwrap_or("")
    }

    pub fn set_text(&mut self, key: &str, v: &str) {
        if let Some(f) = self.fields.iter_mut().find(|f| f.key == key) {
            f.value = Value::Text(v.to_string());
        }
    }

    /// Chooses `option` in the choice field `key`; false (nothing changed) when the field
    /// has no such option.
    pub fn select(&mut self, key: &str, option: &str) -> bool {
        let Some(f) = self.fields.iter_mut().find(|f| f.key == key) else {
            return false;
        };
        match &mut f.value {
            Value::Choice(o, i) => match o.iter().position(|x| x == option) {
                Some(j) => {
                    *i = j;
                    true
                }
                None => false,
            },
            Value::Text(_) => false,
        }
    }

    pub fn handle_key(&mut self, k: KeyEvent) -> FormResult {
        let n = self.fields.len();
        match k.code {
            KeyCode::Esc => return FormResult::Cancel,
            KeyCode::Enter => return FormResult::Submit,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % n,
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + n - 1) % n,
            _ => {
                let f = &mut self.fields[self.focus];
                match (&mut f.value, k.code) {
                    (Value::Choice(o, i), KeyCode::Right | KeyCode::Char(' ')) => {
                        *i = (*i + 1) % o.len().max(1);
                        return FormResult::Changed;
                    }
                    (Value::Choice(o, i), KeyCode::Left) => {
                        *i = (*i + o.len().max(1) - 1) % o.len().max(1);
                        return FormResult::Changed;
                    }
                    (Value::Text(s), KeyCode::Backspace) => {
                        s.pop();
                    }
                    (Value::Text(s), KeyCode::Char(c))
                        if !k.modifiers.contains(KeyModifiers::CONTROL) =>
                    {
                        s.push(c);
                    }
                    _ => {}
                }
            }
        }
        FormResult::Editing
    }
}

pub fn draw(f: &mut Frame, area: Rect, form: &Form, theme: &Theme) {
    let h = form.fields.len() as u16 + 6;
    let area = centered(area, 64, h);
    f.render_widget(Clear, area);
    let label_w = form.fields.iter().map(|f| f.label.len()).max().unwrap_or(0);
    let value_w = (area.width as usize).saturating_sub(label_w + 6);
    let mut lines: Vec<Line> = form
        .fields
        .iter()
        .enumerate()
        .map(|(i, fld)| {
            let focused = i == form.focus;
            let v = match &fld.value {
                Value::Text(s) if focused => format!("{s}_"),
                Value::Text(s) if s.is_empty() => fld.hint.to_string(),
                Value::Text(s) => s.clone(),
                Value::Choice(..) => format!("< {} >", fld.get()),
            };
            let vstyle = if focused {
                Style::default()
                    .fg(theme.accent)
                    .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
            } else if matches!(&fld.value, Value::Text(s) if s.is_empty()) {
                Style::default().fg(theme.dim)
            } else {
                Style::default().fg(theme.text)
            };
            Line::from(vec![
                Span::styled(
                    format!(
                        "{}{:>label_w$} ",
                        if focused { ">" } else { " " },
                        fld.label
                    ),
                    Style::default().fg(if focused { theme.accent } else { theme.dim }),
                ),
                Span::styled(clip(&v, value_w), vstyle),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    match &form.error {
        Some(e) => lines.push(Line::from(Span::styled(
            e.clone(),
            Style::default().fg(theme.error),
        ))),
        None => lines.push(Line::from(Span::styled(
            "Tab/↑↓ field · ←→ choose · Enter start · Esc cancel",
            Style::default().fg(theme.dim),
        ))),
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(&form.title, theme)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::widgets::testing::render;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn fields_edit_cycle_and_draw() {
        let mut form = Form::new(
            "new run",
            vec![
                Field::choice("config", "config", vec!["tiny".into(), "micro".into()], ""),
                Field::text("name", "name", "tiny-1", ""),
                Field::text("seed", "seed", "", "(config's)"),
            ],
        );
        assert_eq!(form.handle_key(key(KeyCode::Right)), FormResult::Changed);
        assert_eq!(form.get("config"), "micro");
        assert_eq!(form.handle_key(key(KeyCode::Left)), FormResult::Changed);
        assert_eq!(form.get("config"), "tiny");
        assert!(form.select("config", "micro"));
        assert_eq!(form.get("config"), "micro");
        assert!(!form.select("config", "gpt2"), "no such option");
        assert!(!form.select("name", "micro"), "not a choice");
        assert_eq!((form.get("config"), form.get("name")), ("micro", "tiny-1"));
        assert!(form.select("config", "tiny"));
        form.handle_key(key(KeyCode::Tab));
        form.handle_key(key(KeyCode::Backspace));
        form.handle_key(key(KeyCode::Char('9')));
        assert_eq!(form.get("name"), "tiny-9");
        let s = render(70, 12, |f| {
            draw(f, f.area(), &form, &Theme::shipped_default())
        });
        assert!(
            s.contains("< tiny >") && s.contains(">  name tiny-9_") && s.contains("(config's)"),
            "{s}"
        );
        form.error = Some("seed: not a number".into());
        let s = render(60, 20, |f| {
            draw(f, f.area(), &form, &Theme::shipped_default())
        });
        assert!(s.contains("seed: not a number"), "{s}");
        assert_eq!(form.handle_key(key(KeyCode::Enter)), FormResult::Submit);
        assert_eq!(form.handle_key(key(KeyCode::Esc)), FormResult::Cancel);
    }
}
