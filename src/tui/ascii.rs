//! ASCII mode (`--ascii`, `ascii = true`): after a frame is drawn, every cell that is not
//! ASCII is replaced by its nearest ASCII look-alike, so the lab works on terminals and
//! fonts without Unicode (a `LANG=C` SSH session, a serial console). One pass over the
//! finished frame covers everything: borders, chart axes, gauges, sparklines, tree
//! markers, the separators in texts and widgets from other crates alike.

use ratatui::buffer::Buffer;
use unicode_width::UnicodeWidthStr;

/// The ASCII stand-in for one non-ASCII character.
fn fallback(c: char) -> char {
    match c {
        // Box drawing: lines, double lines, dashes; anything else in the block is a corner
        // or a junction.
        '─' | '━' | '┄' | '┅' | '┈' | '┉' | '╌' | '╍' | '╴' | '╶' | '╸' | '╺' | '╼' | '╾' => {
            '-'
        }
        '═' => '=',
        '│' | '┃' | '┆' | '┇' | '┊' | '┋' | '╎' | '╏' | '║' | '╵' | '╷' | '╹' | '╻' | '╽' | '╿' => {
            '|'
        }
        '╱' => '/',
        '╲' => '\\',
        '╳' => 'X',
        '\u{2500}'..='\u{257f}' => '+',
        // Blocks and shades: solid, then lighter; the eighths of sparklines and gauges by
        // their height.
        '█' | '▉' | '▊' | '▓' | '■' | '▇' | '▆' => '#',
        '▒' | '▅' | '▄' | '▀' | '▌' | '▐' | '▋' | '▍' => '=',
        '▃' | '▎' | '▏' | '▔' | '▕' => '-',
        '▂' | '▁' => '_',
        '░' => '.',
        '\u{2580}'..='\u{259f}' => '#',
        // Braille: a blank pattern is a space, any dot a dot.
        '\u{2800}' => ' ',
        '\u{2801}'..='\u{28ff}' => '.',
        '•' | '●' | '◆' | '★' => '*',
        '·' | '∙' | '…' | '○' | '◦' => '.',
        '—' | '–' | '−' | '‐' => '-',
        '→' | '▶' | '▸' | '►' | '›' | '»' => '>',
        '←' | '◀' | '◂' | '◄' | '‹' | '«' => '<',
        '↑' | '▲' | '▴' => '^',
        '↓' | '▼' | '▾' => 'v',
        '×' | '✗' | '✕' => 'x',
        '✓' | '✔' => 'v',
        '≈' | '∼' => '~',
        '≤' => '<',
        '≥' => '>',
        '±' => '+',
        '‘' | '’' | '′' => '\'',
        '“' | '”' | '″' => '"',
        '\u{a0}' => ' ',
        _ => '?',
    }
}

/// Rewrites every non-ASCII cell of `buf` in ASCII. A wide character (two cells) becomes
/// one stand-in and a space, so the columns after it stay where they were.
pub fn to_ascii(buf: &mut Buffer) {
    let area = buf.area;
    for y in area.top()..area.bottom() {
        let mut x = area.left();
        while x < area.right() {
            let cell = &mut buf[(x, y)];
            let sym = cell.symbol();
            if sym.is_ascii() {
                x += 1;
                continue;
            }
            let width = sym.width();
            let c = sym.chars().next().map_or(' ', fallback);
            cell.set_char(c);
            if width > 1 && x + 1 < area.right() {
                buf[(x + 1, y)].set_char(' ');
                x += 1;
            }
            x += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::layout::Rect;
    use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Widget};

    fn text(buf: &Buffer) -> String {
        let a = buf.area;
        (a.top()..a.bottom())
            .map(|y| {
                (a.left()..a.right())
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn borders_gauges_and_text_become_ascii_in_place() {
        let area = Rect::new(0, 0, 16, 4);
        let mut buf = Buffer::empty(area);
        Block::default()
            .borders(Borders::ALL)
            .title(" a · b ")
            .render(area, &mut buf);
        Gauge::default()
            .ratio(0.55)
            .label("")
            .render(Rect::new(1, 1, 14, 1), &mut buf);
        Paragraph::new("→ 漢x").render(Rect::new(1, 2, 14, 1), &mut buf);
        to_ascii(&mut buf);
        let s = text(&buf);
        assert!(s.is_ascii(), "{s}");
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "+ a . b -------+", "{s}");
        assert!(lines[1].starts_with("|#######"), "{s}");
        // The wide character takes its two columns: '?' and a space, then 'x'.
        assert_eq!(&lines[2][..6], "|> ? x", "{s}");
        assert_eq!(lines[3], "+--------------+", "{s}");
    }

    #[test]
    fn every_character_in_the_drawing_blocks_has_an_ascii_stand_in() {
        for c in ('\u{2500}'..='\u{259f}').chain('\u{2800}'..='\u{28ff}') {
            let f = fallback(c);
            assert!(f.is_ascii() && f != '?', "{c} -> {f}");
        }
        assert_eq!(fallback('█'), '#');
        assert_eq!(fallback('░'), '.');
        assert_eq!(fallback('⣿'), '.');
        assert_eq!(fallback('\u{2800}'), ' ');
        assert_eq!(fallback('漢'), '?');
    }
}
