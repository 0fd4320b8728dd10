//! Problems found in policy files, located by file, line and column and shown with the line and a
//! caret under the spot, the way compilers show them.

use std::fmt;
use std::sync::Arc;

/// A policy file's text, kept to locate and show problems.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user gave it.
    pub name: String,
    /// The text.
    pub text: String,
}

impl SourceFile {
    /// The 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(&self.text, offset)
    }

    /// A location spanning `start..end` (byte offsets).
    pub fn location(self: &Arc<Self>, start: usize, end: usize) -> Location {
        let (line, column) = self.line_col(start);
        let end = floor_char_boundary(&self.text, end.min(self.text.len())).max(start);
        Location {
            file: self.clone(),
            line,
            column,
            length: self.text[start.min(end)..end].chars().count().max(1),
        }
    }
}

/// The 1-based line and column (in characters) of byte offset `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where something is in a policy file.
#[derive(Debug, Clone)]
pub struct Location {
    /// The file.
    pub file: Arc<SourceFile>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// How many characters to underline (at least one).
    pub length: usize,
}

impl Location {
    /// `file:line:column`.
    pub fn short(&self) -> String {
        format!("{}:{}:{}", self.file.name, self.line, self.column)
    }

    /// The line and a caret line under the spot, indented by a gutter with the line number.
    pub fn snippet(&self) -> String {
        let text = self.file.text.lines().nth(self.line - 1).unwrap_or("");
        let gutter = self.line.to_string().len();
        let visible_len = text.chars().count().saturating_sub(self.column - 1).max(1);
        format!(
            "{:gutter$} |\n{} | {text}\n{:gutter$} | {}{}",
            "",
            self.line,
            "",
            " ".repeat(self.column - 1),
            "^".repeat(self.length.min(visible_len)),
        )
    }
}

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; nothing is ignored.
    Warning,
    /// The policy set cannot be used until it is fixed.
    Error,
}

/// A problem in a policy file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Where, when known.
    pub location: Option<Location>,
    /// What is wrong.
    pub message: String,
    /// What would be valid, when there is something to say.
    pub hint: Option<String>,
}

impl Problem {
    /// An error at a location.
    pub fn error(location: Option<Location>, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Error,
            location,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at a location.
    pub fn warning(location: Option<Location>, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(location, message)
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{kind}: {}", self.message)?;
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            writeln!(f, "{:gutter$}--> {}", "", loc.short())?;
            writeln!(f, "{}", loc.snippet())?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  = help: {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            name: "rules.hcl".into(),
            text: text.into(),
        })
    }

    #[test]
    fn locations_count_characters_not_bytes() {
        let f = file("a = 1\nnom = \"é€x\"\n");
        let x = f.text.find('x').unwrap();
        let loc = f.location(x, x + 1);
        assert_eq!((loc.line, loc.column), (2, 10));
        assert_eq!(loc.snippet(), "  |\n2 | nom = \"é€x\"\n  |          ^");
    }

    #[test]
    fn problems_render_with_location_snippet_and_hint() {
        let f = file("rule \"r\" {\n  enforcement = \"hardd\"\n}\n");
        let at = f.text.find("\"hardd\"").unwrap();
        let p = Problem::error(Some(f.location(at, at + 7)), "bad enforcement \"hardd\"")
            .hint("one of advisory, soft, hard");
        assert_eq!(
            p.to_string(),
            "error: bad enforcement \"hardd\"\n --> rules.hcl:2:17\n  |\n2 |   enforcement = \"hardd\"\n  |                 ^^^^^^^\n  = help: one of advisory, soft, hard\n"
        );
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let names = ["resource", "prior", "pools", "policy"];
        assert_eq!(did_you_mean("resorce", names), Some("resource"));
        assert_eq!(did_you_mean("pool", names), Some("pools"));
        assert_eq!(did_you_mean("zebra", names), None);
    }
}
