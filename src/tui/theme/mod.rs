//! Colours. Three themes ship in `themes/` (embedded: `default`, `light`, `high-contrast`); a
//! user theme (`--theme FILE`, or `<config dir>/themes/NAME.toml`) sets the keys it changes
//! over the shipped one. Colours degrade to what the terminal shows: truecolor only when it
//! says so (`COLORTERM`), else 256 or 16 colours; none at all with `NO_COLOR`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ratatui::style::Color;
use serde::Deserialize;

pub use degrade::{rgb_to_16, rgb_to_256, ColorMode};

mod degrade;

pub const SHIPPED: [(&str, &str); 3] = [
    (
        "default",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/themes/default.toml")),
    ),
    (
        "light",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/themes/light.toml")),
    ),
    (
        "high-contrast",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/themes/high-contrast.toml"
        )),
    ),
];
pub const DEFAULT_THEME: &str = SHIPPED[0].1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    accent: Option<String>,
    text: Option<String>,
    dim: Option<String>,
    faint: Option<String>,
    ok: Option<String>,
    warn: Option<String>,
    error: Option<String>,
    border: Option<String>,
    selection: Option<String>,
    series: Option<Vec<String>>,
    ascii: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub accent: Color,
    pub text: Color,
    pub dim: Color,
    /// Raw curves behind their smoothed ones.
    pub faint: Color,
    pub ok: Color,
    pub warn: Color,
    pub error: Color,
    pub border: Color,
    /// Background of the selected row.
    pub selection: Color,
    /// Run colours on charts.
    pub series: Vec<Color>,
    /// Charts without Braille.
    pub ascii: bool,
    /// No colours at all (`NO_COLOR`): emphasis by bold and reverse video only.
    pub no_color: bool,
}

fn parse_color(key: &str, s: &str, source: &str) -> Result<Color> {
    s.parse::<Color>().ok().with_context(|| {
        format!("{source}: `{key}` = \"{s}\" is not a colour (a name like cyan, or #rrggbb)")
    })
}

impl Theme {
    /// `base` with the keys of `text` (a theme file named `source`) applied.
    pub fn overlay(mut self, text: &str, source: &str) -> Result<Theme> {
        let file: ThemeFile =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {}", e.message()))?;
        let set = |slot: &mut Color, key: &str, v: &Option<String>| -> Result<()> {
            if let Some(v) = v {
                *slot = parse_color(key, v, source)?;
            }
            Ok(())
        };
        set(&mut self.accent, "accent", &file.accent)?;
        set(&mut self.text, "text", &file.text)?;
        set(&mut self.dim, "dim", &file.dim)?;
        set(&mut self.faint, "faint", &file.faint)?;
        set(&mut self.ok, "ok", &file.ok)?;
        set(&mut self.warn, "warn", &file.warn)?;
        set(&mut self.error, "error", &file.error)?;
        set(&mut self.border, "border", &file.border)?;
        set(&mut self.selection, "selection", &file.selection)?;
        if let Some(series) = &file.series {
            if series.is_empty() {
                bail!("{source}: `series` needs at least one colour");
            }
            self.series = series
                .iter()
                .map(|c| parse_color("series", c, source))
                .collect::<Result<_>>()?;
        }
        if let Some(a) = file.ascii {
            self.ascii = a;
        }
        Ok(self)
    }

    /// The default theme with the keys of `text` applied.
    pub fn from_toml(text: &str, source: &str) -> Result<Theme> {
        Theme::default_theme().overlay(text, source)
    }

    /// The 16-colour fallback every theme starts from (so a theme file may be partial).
    pub fn default_theme() -> Theme {
        Theme {
            accent: Color::Cyan,
            text: Color::White,
            dim: Color::Gray,
            faint: Color::DarkGray,
            ok: Color::Green,
            warn: Color::Yellow,
            error: Color::Red,
            border: Color::DarkGray,
            selection: Color::Blue,
            series: vec![
                Color::Cyan,
                Color::LightRed,
                Color::LightMagenta,
                Color::LightGreen,
                Color::Yellow,
            ],
            ascii: false,
            no_color: false,
        }
    }

    /// The shipped dark default.
    pub fn shipped_default() -> Theme {
        Theme::from_toml(DEFAULT_THEME, "themes/default.toml").expect("the default theme parses")
    }

    /// A theme by name or file: a path to a `.toml` file; else a name, taken from the user's
    /// `<config_dir>/themes/NAME.toml` over the shipped theme of that name (if any).
    pub fn resolve(spec: Option<&str>, config_dir: &Path) -> Result<Theme> {
        let spec = spec.unwrap_or("default");
        let base = Theme::shipped_default();
        let as_path = PathBuf::from(spec);
        if spec.ends_with(".toml") || spec.contains('/') {
            if !as_path.is_file() {
                bail!("theme {spec}: no such file");
            }
            let text = std::fs::read_to_string(&as_path)
                .with_context(|| format!("cannot read theme {spec}"))?;
            return base.overlay(&text, spec);
        }
        let name = if spec == "dark" { "default" } else { spec };
        let shipped = SHIPPED.iter().find(|(n, _)| *n == name);
        let mut theme = match shipped {
            Some((n, text)) => base.overlay(text, &format!("themes/{n}.toml"))?,
            None => base,
        };
        let user = config_dir.join("themes").join(format!("{name}.toml"));
        if user.is_file() {
            let text = std::fs::read_to_string(&user)
                .with_context(|| format!("cannot read theme {}", user.display()))?;
            theme = theme.overlay(&text, &user.display().to_string())?;
        } else if shipped.is_none() {
            bail!(
                "theme `{spec}`: not a shipped theme ({}) and no {} exists",
                SHIPPED.map(|(n, _)| n).join(", "),
                user.display()
            );
        }
        Ok(theme)
    }

    /// The theme as this terminal can show it.
    pub fn for_terminal(mut self, mode: ColorMode) -> Theme {
        for c in [
            &mut self.accent,
            &mut self.text,
            &mut self.dim,
            &mut self.faint,
            &mut self.ok,
            &mut self.warn,
            &mut self.error,
            &mut self.border,
            &mut self.selection,
        ] {
            *c = mode.adapt(*c);
        }
        for c in &mut self.series {
            *c = mode.adapt(*c);
        }
        self.no_color = mode == ColorMode::None;
        self
    }

    /// A run's colour on charts: the same for the same name, every time.
    pub fn run_color(&self, name: &str) -> Color {
        // FNV-1a: stable across builds, unlike the std hasher.
        let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        self.series[(h % self.series.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_themes_parse_and_bad_colours_are_named() {
        for (name, _) in SHIPPED {
            Theme::resolve(Some(name), Path::new("/nonexistent")).unwrap();
        }
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
        let e = Theme::resolve(Some("solarized"), Path::new("/cfg"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("default, light, high-contrast"), "{e}");
    }

    #[test]
    fn a_user_theme_overrides_the_shipped_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("themes")).unwrap();
        std::fs::write(dir.path().join("themes/light.toml"), "ok = \"#010203\"\n").unwrap();
        let light = Theme::resolve(Some("light"), dir.path()).unwrap();
        assert_eq!(light.ok, Color::Rgb(1, 2, 3));
        assert_eq!(
            light.accent,
            Color::Rgb(0, 0x5f, 0xaf),
            "the rest is shipped"
        );
        std::fs::write(dir.path().join("themes/mine.toml"), "ascii = true\n").unwrap();
        assert!(Theme::resolve(Some("mine"), dir.path()).unwrap().ascii);
        let file = dir.path().join("themes/mine.toml");
        assert!(
            Theme::resolve(Some(file.to_str().unwrap()), dir.path())
                .unwrap()
                .ascii
        );
    }
}
