//! Diagnostics: what the provider tells the user, with the attribute path Terraform uses to point at
//! the offending line of configuration.

use std::fmt;

/// One step of an attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An attribute or nested block by name.
    Attr(String),
    /// A list element.
    Index(i64),
    /// A map element.
    Key(String),
}

/// A path from the resource's root to an attribute, e.g. `data_residency.allowed_regions[0]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttrPath(pub Vec<Step>);

impl AttrPath {
    /// The root.
    pub fn root() -> AttrPath {
        AttrPath(Vec::new())
    }

    /// Parses a dotted path with `[n]` indexes: `a.b[0].c`.
    pub fn parse(path: &str) -> AttrPath {
        let mut steps = Vec::new();
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let (name, rest) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                steps.push(Step::Attr(name.to_string()));
            }
            for idx in rest.split('[') {
                let idx = idx.trim_end_matches(']');
                if let Ok(i) = idx.parse() {
                    steps.push(Step::Index(i));
                } else if !idx.is_empty() {
                    steps.push(Step::Key(idx.trim_matches('"').to_string()));
                }
            }
        }
        AttrPath(steps)
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Step::Attr(a) if i == 0 => write!(f, "{a}")?,
                Step::Attr(a) => write!(f, ".{a}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
                Step::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Fails the operation.
    Error,
    /// Shown, does not fail.
    Warning,
}

/// A message for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// The explanation and what would be valid.
    pub detail: String,
    /// The attribute concerned, if any.
    pub path: Option<AttrPath>,
}

impl Diagnostic {
    /// An error about an attribute.
    pub fn attr_error(path: &str, summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            summary: summary.into(),
            detail: detail.into(),
            path: Some(AttrPath::parse(path)),
        }
    }

    /// An error about the whole resource or operation.
    pub fn error(summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            summary: summary.into(),
            detail: detail.into(),
            path: None,
        }
    }

    /// A warning about an attribute.
    pub fn attr_warning(path: &str, summary: impl Into<String>, detail: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::attr_error(path, summary, detail)
        }
    }
}

/// A list of diagnostics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Whether any is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    /// Adds all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_print() {
        let p = AttrPath::parse("data_residency.allowed_regions[2]");
        assert_eq!(
            p.0,
            vec![
                Step::Attr("data_residency".into()),
                Step::Attr("allowed_regions".into()),
                Step::Index(2)
            ]
        );
        assert_eq!(p.to_string(), "data_residency.allowed_regions[2]");
        assert_eq!(
            AttrPath::parse("labels[\"team\"]").to_string(),
            "labels[\"team\"]"
        );
    }
}
