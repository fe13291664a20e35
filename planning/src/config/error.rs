//! Configuration errors that point at the offending place in `shardci.toml`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem in `shardci.toml`, with the file, line and column it is at (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Turns byte spans of the configuration text into [`ConfigError`]s.
#[derive(Debug, Clone)]
pub(crate) struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error about the file as a whole (line 1, column 1).
    pub(crate) fn file_error(&self, message: impl Into<String>) -> ConfigError {
        self.error(0..0, message)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn offsets_map_to_one_based_lines_and_columns() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 4));
        assert_eq!(line_column(text, 1000), (3, 1));
    }
}
