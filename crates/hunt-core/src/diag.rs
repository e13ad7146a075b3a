//! Problems found in a hunts file: each with a place, a message and a hint.
//!
//! A [`Problem`] is plain data so the CLI can draw it rustc-style (through miette) and
//! the server can return it as JSON. Nothing here prints or reads files.

use std::sync::Arc;

use serde::Serialize;

/// A byte range of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub const fn new(offset: usize, len: usize) -> Span {
        Span { offset, len }
    }

    /// A point (drawn one character wide).
    pub const fn at(offset: usize) -> Span {
        Span { offset, len: 0 }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong (or suspicious) in a hunts file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    pub message: String,
    /// What to do about it, when we can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Where, in bytes of the source.
    #[serde(skip)]
    pub span: Span,
}

impl Problem {
    pub fn error(span: Span, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Error,
            message: message.into(),
            help: None,
            span,
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Warning,
            message: message.into(),
            help: None,
            span,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }
}

/// A 1-based line and character column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// A file's text and the problems found in it, in the order of their place.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub source: Arc<String>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn new(name: impl Into<String>, source: Arc<String>, mut problems: Vec<Problem>) -> Report {
        problems.sort_by_key(|p| (p.span.offset, p.severity == Severity::Warning));
        Report {
            name: name.into(),
            source,
            problems,
        }
    }

    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }

    /// Where a byte offset falls, as line and column (clamped to the text).
    pub fn line_col(&self, offset: usize) -> LineCol {
        line_col(&self.source, offset)
    }

    /// The problems as miette diagnostics, for drawing.
    pub fn diagnostics(&self) -> Vec<Diagnosed> {
        let src = miette::NamedSource::new(self.name.clone(), self.source.clone());
        self.problems
            .iter()
            .map(|p| {
                let at = self.line_col(p.span.offset);
                Diagnosed {
                    problem: p.clone(),
                    source: src.clone(),
                    at,
                    file: self.name.clone(),
                }
            })
            .collect()
    }

    /// The problems as JSON objects with file, line and column.
    pub fn to_json(&self) -> serde_json::Value {
        let items: Vec<serde_json::Value> = self
            .problems
            .iter()
            .map(|p| {
                let at = self.line_col(p.span.offset);
                serde_json::json!({
                    "severity": p.severity,
                    "file": self.name,
                    "line": at.line,
                    "column": at.column,
                    "message": p.message,
                    "help": p.help,
                })
            })
            .collect();
        serde_json::Value::Array(items)
    }
}

/// The byte offset of a 1-based line and character column (the end of the text if past it).
pub fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let bytes: usize = l
                .chars()
                .take(column.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            return (offset + bytes).min(text.len());
        }
        offset += l.len();
    }
    text.len()
}

/// Where a byte offset falls, as a 1-based line and character column.
pub fn line_col(source: &str, offset: usize) -> LineCol {
    let offset = offset.min(source.len());
    let mut line = 1;
    let mut line_start = 0;
    for (i, b) in source.as_bytes()[..offset].iter().enumerate() {
        if *b == b'\n' {
            line += 1;
            line_start = i + 1;
        }
    }
    let column = source
        .get(line_start..offset)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    LineCol { line, column }
}

/// A problem ready to be drawn by miette, with its file's text.
#[derive(Debug)]
pub struct Diagnosed {
    pub problem: Problem,
    pub source: miette::NamedSource<Arc<String>>,
    pub at: LineCol,
    pub file: String,
}

impl std::fmt::Display for Diagnosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for Diagnosed {}

impl miette::Diagnostic for Diagnosed {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.problem.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.problem
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = self.problem.span;
        let label = format!("{}:{}:{}", self.file, self.at.line, self.at.column);
        Some(Box::new(std::iter::once(miette::LabeledSpan::new(
            Some(label),
            span.offset,
            span.len,
        ))))
    }
}

/// A whole number with thousands separated by commas: `1,204,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The closest of `candidates` to a misspelt `word`, if one is close enough to suggest.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let src = "ab\nçd: x\n";
        assert_eq!(line_col(src, 0), LineCol { line: 1, column: 1 });
        assert_eq!(line_col(src, 3), LineCol { line: 2, column: 1 });
        // 'ç' is two bytes, one character.
        assert_eq!(line_col(src, 5), LineCol { line: 2, column: 2 });
        assert_eq!(line_col(src, 999), LineCol { line: 3, column: 1 });
    }

    #[test]
    fn offsets_and_line_columns_agree() {
        let src = "ab\nçd: x\n";
        for offset in [0, 1, 3, 5, 6] {
            let at = line_col(src, offset);
            assert_eq!(offset_of(src, at.line, at.column), offset);
        }
        assert_eq!(offset_of(src, 9, 1), src.len());
    }

    #[test]
    fn suggestions_only_when_close() {
        assert_eq!(
            did_you_mean("complete_afer", ["complete_after", "count"]),
            Some("complete_after")
        );
        assert_eq!(did_you_mean("zzz", ["complete_after", "count"]), None);
    }
}
