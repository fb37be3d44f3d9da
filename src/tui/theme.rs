//! Colours. Three themes ship in `themes/` (embedded: `default`, `light`, `high-contrast`); a
//! user theme (`--theme FILE`, or `<config dir>/themes/NAME.toml`) sets the keys it changes
//! over the shipped one. Colours degrade to what the terminal shows: truecolor only when it
//! says so (`COLORTERM`), else 256 or 16 colours; none at all with `NO_COLOR`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ratatui::style::Color;
use serde::Deserialize;

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

/// How many colours the terminal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    TrueColor,
    Ansi256,
    Ansi16,
    None,
}

impl ColorMode {
    /// From the environment: `NO_COLOR` (any non-empty value) turns colours off; truecolor
    /// only when `COLORTERM` announces it (often unset over SSH and in tmux); 256 colours
    /// when `TERM` says so; 16 otherwise.
    pub fn detect(get: impl Fn(&str) -> Option<String>) -> ColorMode {
        if get("NO_COLOR").is_some_and(|v| !v.is_empty()) {
            return ColorMode::None;
        }
        let colorterm = get("COLORTERM").unwrap_or_default().to_lowercase();
        if colorterm == "truecolor" || colorterm == "24bit" {
            return ColorMode::TrueColor;
        }
        if get("TERM").unwrap_or_default().contains("256") {
            return ColorMode::Ansi256;
        }
        ColorMode::Ansi16
    }

    pub fn from_env() -> ColorMode {
        ColorMode::detect(|k| std::env::var(k).ok())
    }

    pub fn adapt(self, c: Color) -> Color {
        match (self, c) {
            (ColorMode::None, _) => Color::Reset,
            (ColorMode::Ansi256, Color::Rgb(r, g, b)) => Color::Indexed(rgb_to_256(r, g, b)),
            (ColorMode::Ansi16, Color::Rgb(r, g, b)) => rgb_to_16(r, g, b),
            (ColorMode::Ansi16, Color::Indexed(i)) if i >= 16 => {
                let (r, g, b) = indexed_to_rgb(i);
                rgb_to_16(r, g, b)
            }
            _ => c,
        }
    }
}

const CUBE: [u8; 6] = [0, 95, 135, 175, 215, 255];

fn nearest_cube(v: u8) -> usize {
    (0..6)
        .min_by_key(|&i| (CUBE[i] as i32 - v as i32).abs())
        .unwrap_or(0)
}

/// The nearest xterm-256 colour: the 6x6x6 cube or the grey ramp, whichever is closer.
pub fn rgb_to_256(r: u8, g: u8, b: u8) -> u8 {
    let (ri, gi, bi) = (nearest_cube(r), nearest_cube(g), nearest_cube(b));
    let cube = (16 + 36 * ri + 6 * gi + bi) as u8;
    let avg = (r as u32 + g as u32 + b as u32) / 3;
    let grey_i = ((avg.saturating_sub(8)) / 10).min(23) as u8;
    let grey_v = 8 + 10 * grey_i as u32;
    let dist = |(a, b2, c): (u32, u32, u32)| {
        let d = |x: u32, y: u8| (x as i64 - y as i64).pow(2);
        d(a, r) + d(b2, g) + d(c, b)
    };
    let cube_d = dist((CUBE[ri] as u32, CUBE[gi] as u32, CUBE[bi] as u32));
    let grey_d = dist((grey_v, grey_v, grey_v));
    if grey_d < cube_d {
        232 + grey_i
    } else {
        cube
    }
}

fn indexed_to_rgb(i: u8) -> (u8, u8, u8) {
    if i >= 232 {
        let v = 8 + 10 * (i - 232);
        (v, v, v)
    } else {
        let i = (i - 16) as usize;
        (CUBE[i / 36], CUBE[(i / 6) % 6], CUBE[i % 6])
    }
}

/// The nearest of the 16 basic colours (their usual xterm values).
pub fn rgb_to_16(r: u8, g: u8, b: u8) -> Color {
    const BASIC: [(Color, (u8, u8, u8)); 16] = [
        (Color::Black, (0, 0, 0)),
        (Color::Red, (205, 0, 0)),
        (Color::Green, (0, 205, 0)),
        (Color::Yellow, (205, 205, 0)),
        (Color::Blue, (0, 0, 238)),
        (Color::Magenta, (205, 0, 205)),
        (Color::Cyan, (0, 205, 205)),
        (Color::Gray, (229, 229, 229)),
        (Color::DarkGray, (127, 127, 127)),
        (Color::LightRed, (255, 0, 0)),
        (Color::LightGreen, (0, 255, 0)),
        (Color::LightYellow, (255, 255, 0)),
        (Color::LightBlue, (92, 92, 255)),
        (Color::LightMagenta, (255, 0, 255)),
        (Color::LightCyan, (0, 255, 255)),
        (Color::White, (255, 255, 255)),
    ];
    BASIC
        .iter()
        .min_by_key(|(_, (r2, g2, b2))| {
            let d = |x: u8, y: u8| (x as i64 - y as i64).pow(2);
            d(r, *r2) + d(g, *g2) + d(b, *b2)
        })
        .map(|(c, _)| *c)
        .unwrap_or(Color::Reset)
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

    #[test]
    fn colours_degrade_to_what_the_terminal_shows() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            ColorMode::detect(env(&[("COLORTERM", "truecolor")])),
            ColorMode::TrueColor
        );
        assert_eq!(
            ColorMode::detect(env(&[("TERM", "tmux-256color")])),
            ColorMode::Ansi256
        );
        assert_eq!(
            ColorMode::detect(env(&[("TERM", "xterm")])),
            ColorMode::Ansi16
        );
        assert_eq!(
            ColorMode::detect(env(&[("NO_COLOR", "1"), ("COLORTERM", "truecolor")])),
            ColorMode::None
        );
        assert_eq!(
            ColorMode::detect(env(&[("NO_COLOR", "")])),
            ColorMode::Ansi16
        );
        assert_eq!(rgb_to_256(0x5f, 0xaf, 0xff), 75);
        assert_eq!(rgb_to_256(0x30, 0x30, 0x30), 236);
        assert_eq!(rgb_to_16(250, 10, 10), Color::LightRed);
        let t = Theme::shipped_default().for_terminal(ColorMode::Ansi256);
        assert_eq!(t.accent, Color::Indexed(75));
        let t = Theme::shipped_default().for_terminal(ColorMode::Ansi16);
        assert!(!matches!(t.accent, Color::Rgb(..) | Color::Indexed(_)));
        let t = Theme::shipped_default().for_terminal(ColorMode::None);
        assert!(
            t.no_color && t.accent == Color::Reset && t.series.iter().all(|c| *c == Color::Reset)
        );
        let d = Theme::shipped_default();
        assert_eq!(d.run_color("model1"), d.run_color("model1"));
    }
}
