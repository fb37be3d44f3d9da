//! Colours: the embedded default theme (`themes/default.toml`), overridable by a user file.

use anyhow::{bail, Context, Result};
use ratatui::style::Color;
use serde::Deserialize;

pub const DEFAULT_THEME: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/themes/default.toml"));

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    accent: Option<String>,
    text: Option<String>,
    dim: Option<String>,
    ok: Option<String>,
    warn: Option<String>,
    error: Option<String>,
    border: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Theme {
    pub accent: Color,
    pub text: Color,
    pub dim: Color,
    pub ok: Color,
    pub warn: Color,
    pub error: Color,
    pub border: Color,
}

fn parse_color(key: &str, s: &str, source: &str) -> Result<Color> {
    s.parse::<Color>().ok().with_context(|| {
        format!("{source}: `{key}` = \"{s}\" is not a colour (a name like cyan, or #rrggbb)")
    })
}

impl Theme {
    /// The default theme with the keys of `text` (a theme file named `source`) applied.
    pub fn from_toml(text: &str, source: &str) -> Result<Theme> {
        let mut theme = Theme::default_theme();
        let file: ThemeFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {}", e.message()))?;
        let set = |slot: &mut Color, key: &str, v: &Option<String>| -> Result<()> {
            if let Some(v) = v {
                *slot = parse_color(key, v, source)?;
            }
            Ok(())
        };
        set(&mut theme.accent, "accent", &file.accent)?;
        set(&mut theme.text, "text", &file.text)?;
        set(&mut theme.dim, "dim", &file.dim)?;
        set(&mut theme.ok, "ok", &file.ok)?;
        set(&mut theme.warn, "warn", &file.warn)?;
        set(&mut theme.error, "error", &file.error)?;
        set(&mut theme.border, "border", &file.border)?;
        Ok(theme)
    }

    pub fn default_theme() -> Theme {
        Theme {
            accent: Color::Cyan,
            text: Color::White,
            dim: Color::DarkGray,
            ok: Color::Green,
            warn: Color::Yellow,
            error: Color::Red,
            border: Color::Gray,
        }
    }

    pub fn load(path: Option<&std::path::Path>) -> Result<Theme> {
        let base = Theme::from_toml(DEFAULT_THEME, "themes/default.toml")?;
        match path {
            None => Ok(base),
            Some(p) => {
                if !p.is_file() {
                    bail!("theme {}: no such file", p.display());
                }
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read theme {}", p.display()))?;
                Theme::from_toml(&text, &p.display().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_theme_parses_and_bad_colours_are_named() {
        let t = Theme::load(None).unwrap();
        assert_eq!(t.accent, Color::Cyan);
        let t = Theme::from_toml("accent = \"#ff0000\"\n", "mine.toml").unwrap();
        assert_eq!(t.accent, Color::Rgb(255, 0, 0));
        assert_eq!(t.ok, Color::Green);
        let e = Theme::from_toml("accent = \"blurple\"\n", "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mine.toml: `accent` = \"blurple\" is not a colour"),
            "{e}"
        );
        let e = Theme::from_toml("accnt = \"red\"\n", "mine.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mine.toml") && e.contains("accnt"), "{e}");
    }
}
