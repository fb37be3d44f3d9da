//! Where text may be cut into pieces that encode to exactly the whole text's tokens with a
//! byte-level (GPT-2 regex) pre-tokenizer: just before a newline followed by a
//! non-whitespace character, or (for long lines) just before a single space between two
//! non-whitespace characters. Every token of that regex is either all whitespace or an
//! optional leading space followed by non-whitespace, so neither place is inside a token.

/// Where to cut a document into pieces.
#[derive(Debug, Clone, Copy)]
pub struct Cutting {
    /// Cut at the first safe place after this many bytes.
    pub target: usize,
    /// With no line start to cut before by `4 * target` bytes, cut before a single space
    /// between two non-space characters (also safe for the GPT-2 regex); with neither by
    /// this many bytes, cut at a character boundary.
    pub hard_max: usize,
}

fn char_at(b: &[u8], i: usize) -> Option<char> {
    let len = match *b.get(i)? {
        x if x < 0x80 => 1,
        x if x >= 0xf0 => 4,
        x if x >= 0xe0 => 3,
        _ => 2,
    };
    std::str::from_utf8(b.get(i..i + len)?).ok()?.chars().next()
}

fn char_before(b: &[u8], i: usize) -> Option<char> {
    let mut s = i.checked_sub(1)?;
    while s > 0 && i - s < 4 && (b[s] & 0xc0) == 0x80 {
        s -= 1;
    }
    std::str::from_utf8(&b[s..i]).ok()?.chars().next()
}

/// The first place at or after `from` (and after byte 0) just before a newline followed by a
/// non-whitespace character.
pub fn line_cut(b: &[u8], from: usize) -> Option<usize> {
    (from.max(1)..b.len())
        .find(|&p| b[p] == b'\n' && char_at(b, p + 1).is_some_and(|c| !c.is_whitespace()))
}

/// The first place at or after `from` just before a single space between two non-whitespace
/// characters.
pub fn space_cut(b: &[u8], from: usize) -> Option<usize> {
    (from.max(1)..b.len()).find(|&p| {
        b[p] == b' '
            && char_at(b, p + 1).is_some_and(|c| !c.is_whitespace())
            && char_before(b, p).is_some_and(|c| !c.is_whitespace())
    })
}

/// Where to cut `b` (a document's unread text, `eof` when nothing follows), or `None` to
/// read more first.
pub fn find_cut(b: &[u8], cut: Cutting, eof: bool) -> Option<usize> {
    if b.len() <= cut.target {
        return None;
    }
    if let Some(p) = line_cut(b, cut.target) {
        return Some(p);
    }
    if b.len() >= 4 * cut.target || eof {
        if let Some(p) = space_cut(b, cut.target) {
            return Some(p);
        }
    }
    if b.len() > cut.hard_max {
        let mut p = cut.hard_max;
        while p > 1 && (b[p] & 0xc0) == 0x80 {
            p -= 1;
        }
        return Some(p);
    }
    None
}

/// Cuts an in-memory text into pieces of about `cut.target` bytes.
pub fn cut_text(text: &str, cut: Cutting) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(p) = find_cut(rest.as_bytes(), cut, true) {
        if !rest.is_char_boundary(p) {
            break;
        }
        out.push(&rest[..p]);
        rest = &rest[p..];
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUT: Cutting = Cutting {
        target: 37,
        hard_max: 1000,
    };

    #[test]
    fn pieces_cover_the_text_and_cut_before_a_line_start() {
        let text = "line one\nline two\n\n  indented\nthird\n".repeat(50);
        let chunks = cut_text(&text, CUT);
        assert!(chunks.len() > 5);
        assert_eq!(chunks.concat(), text);
        for c in &chunks[1..] {
            assert!(c.starts_with('\n'), "{c:?}");
            assert!(!c[1..].starts_with(char::is_whitespace), "{c:?}");
        }
    }

    #[test]
    fn long_lines_are_cut_before_a_single_space_and_at_last_anywhere() {
        let text = "wörd  and  then some words, élan vital ".repeat(40);
        let chunks = cut_text(&text, CUT);
        assert!(chunks.len() > 5);
        assert_eq!(chunks.concat(), text);
        for w in chunks.windows(2) {
            assert!(
                w[1].starts_with(' ') && !w[1][1..].starts_with(' '),
                "{w:?}"
            );
            assert!(!w[0].ends_with(char::is_whitespace), "{w:?}");
        }
        let solid = "é".repeat(3000);
        let chunks = cut_text(&solid, CUT);
        assert_eq!(chunks.concat(), solid);
        assert!(chunks.iter().all(|c| c.len() <= 1000));
    }
}
