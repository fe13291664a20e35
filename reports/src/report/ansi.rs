//! Terminal colours in step logs: drawn as coloured spans in HTML, removed where they cannot
//! be shown (JUnit, Markdown). Only SGR colours and bold are drawn; every other escape sequence
//! (cursor moves, titles, hyperlinks) is dropped rather than shown as garbage.

use super::escape::escape;

/// The 16 colours of a terminal's palette, as GitHub's dark-on-light log view draws them.
const PALETTE: [&str; 16] = [
    "#24292f", "#cf222e", "#116329", "#4d2d00", "#0969da", "#8250df", "#1b7c83", "#6e7781",
    "#57606a", "#a40e26", "#1a7f37", "#633c01", "#218bff", "#a475f9", "#3192aa", "#8c959f",
];

#[derive(Default, Clone, Copy, PartialEq)]
struct Style {
    foreground: Option<usize>,
    bold: bool,
}

impl Style {
    fn apply(&mut self, params: &str) {
        let codes: Vec<u32> = params.split(';').map(|p| p.parse().unwrap_or(0)).collect();
        let mut i = 0;
        while i < codes.len() {
            match codes[i] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                c @ 30..=37 => self.foreground = Some((c - 30) as usize),
                c @ 90..=97 => self.foreground = Some((c - 90 + 8) as usize),
                39 => self.foreground = None,
                // 256-colour and true-colour forms carry their own parameters: skipped whole.
                38 | 48 => {
                    i += match codes.get(i + 1) {
                        Some(5) => 2,
                        Some(2) => 4,
                        _ => 0,
                    };
                }
                _ => {}
            }
            i += 1;
        }
    }

    fn open(&self) -> Option<String> {
        if *self == Style::default() {
            return None;
        }
        let mut css = String::new();
        if let Some(colour) = self.foreground {
            css.push_str("color:");
            css.push_str(PALETTE[colour]);
            css.push(';');
        }
        if self.bold {
            css.push_str("font-weight:bold;");
        }
        Some(format!("<span style=\"{css}\">"))
    }
}

/// Pieces of `text`: plain runs and the parameters of SGR sequences (`Err`); other escape
/// sequences are dropped.
fn pieces(text: &str) -> Vec<Result<&str, &str>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('\u{1b}') {
        if at > 0 {
            out.push(Ok(&rest[..at]));
        }
        let after = &rest[at + 1..];
        if let Some(csi) = after.strip_prefix('[') {
            // Parameters, then one final byte in @..~.
            let end = csi
                .char_indices()
                .find(|(_, c)| ('@'..='~').contains(c))
                .map(|(i, _)| i);
            match end {
                Some(end) => {
                    if csi[end..].starts_with('m') {
                        out.push(Err(&csi[..end]));
                    }
                    rest = &csi[end + 1..];
                }
                None => rest = "",
            }
        } else if let Some(osc) = after.strip_prefix(']') {
            // Ends at BEL or ESC \.
            let end = osc
                .find('\u{7}')
                .map(|i| i + 1)
                .or_else(|| osc.find("\u{1b}\\").map(|i| i + 2));
            rest = end.map_or("", |e| &osc[e..]);
        } else {
            rest = after.get(1..).unwrap_or("");
        }
    }
    if !rest.is_empty() {
        out.push(Ok(rest));
    }
    out
}

/// `text` as HTML: escaped, colours as spans, other escape sequences gone.
pub fn to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut style = Style::default();
    let mut open = false;
    for piece in pieces(text) {
        match piece {
            Ok(plain) => out.push_str(&escape(plain)),
            Err(params) => {
                if open {
                    out.push_str("</span>");
                    open = false;
                }
                style.apply(params);
                if let Some(span) = style.open() {
                    out.push_str(&span);
                    open = true;
                }
            }
        }
    }
    if open {
        out.push_str("</span>");
    }
    out
}

/// `text` without escape sequences.
pub fn strip(text: &str) -> String {
    pieces(text).into_iter().filter_map(Result::ok).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_spans_and_other_sequences_vanish() {
        let log =
            "\u{1b}[1;31mFAILED\u{1b}[0m tests/test_x.py <ok>\u{1b}[2K\u{1b}]0;title\u{7}done";
        assert_eq!(
            to_html(log),
            "<span style=\"color:#cf222e;font-weight:bold;\">FAILED</span> tests/test_x.py &lt;ok&gt;done"
        );
        assert_eq!(strip(log), "FAILED tests/test_x.py <ok>done");
    }

    #[test]
    fn extended_colours_and_truncated_sequences_do_not_break_the_text() {
        assert_eq!(strip("a\u{1b}[38;5;196mb\u{1b}[0mc"), "abc");
        assert_eq!(
            to_html("a\u{1b}[38;2;1;2;3;1mb"),
            "a<span style=\"font-weight:bold;\">b</span>"
        );
        assert_eq!(strip("cut \u{1b}[31"), "cut ");
        assert_eq!(strip("lone \u{1b}"), "lone ");
    }
}
