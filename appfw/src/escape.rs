//! Making untrusted text (executable paths, command lines) safe to print
//! on one line: a program named "x\n... -> ACCEPT" must not forge a report.

use std::fmt::Write;

/// Escapes backslash, single quote, control characters and Unicode
/// characters that break or reorder lines (line separators, bidi
/// overrides), the way Python's repr does for the old tool's output.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || is_line_or_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn is_line_or_bidi_control(c: char) -> bool {
    matches!(c,
        '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn plain_paths_are_unchanged() {
        assert_eq!(escape("/usr/bin/curl"), "/usr/bin/curl");
        assert_eq!(escape("/opt/größe/bin"), "/opt/größe/bin");
    }

    #[test]
    fn newline_quote_and_backslash_cannot_break_out() {
        let evil = "x' -> ACCEPT.\n'/usr/bin/ok\\";
        let e = escape(evil);
        assert!(!e.contains('\n'));
        assert_eq!(e, "x\\' -> ACCEPT.\\n\\'/usr/bin/ok\\\\");
    }

    #[test]
    fn controls_and_bidi_are_hex_escaped() {
        assert_eq!(escape("a\x1b[31mb"), "a\\x1b[31mb");
        assert_eq!(escape("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(escape("a\u{85}b"), "a\\x85b");
        assert_eq!(escape("a\u{2028}b"), "a\\u{2028}b");
    }
}
