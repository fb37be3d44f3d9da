//! Colour depth: what the terminal shows (truecolor, 256, 16 or none), and the nearest
//! colour of a smaller palette for each theme colour.

use ratatui::style::Color;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::theme::Theme;

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
