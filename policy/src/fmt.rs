//! `gpucap-policy fmt`: the canonical layout of policy files, in the style of `terraform fmt` —
//! two-space indentation by nesting, `=` aligned across consecutive attributes, no trailing
//! whitespace, at most one blank line in a row. Comments and heredocs are kept as written.

/// Why a policy file cannot be formatted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    /// It is not valid HCL.
    #[error("{line}:{column}: HCL syntax error: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// The formatter's output would not parse: a bug in the formatter, caught before writing.
    #[error("formatting would break the file ({0}); please report it")]
    WouldBreak(String),
}

/// Formats `text`; an error when it is not valid HCL (nothing is rewritten then).
pub fn format(text: &str) -> Result<String, FormatError> {
    crate::hcl::check_nesting(text).map_err(|offset| {
        let (line, column) = crate::source::line_col(text, offset);
        FormatError::Syntax {
            line,
            column,
            message: crate::hcl::too_deep(),
        }
    })?;
    hcl_edit::parser::parse_body(text).map_err(|e| FormatError::Syntax {
        line: e.location().line(),
        column: e.location().column(),
        message: e.message().to_string(),
    })?;
    let mut lines: Vec<Line> = Vec::new();
    let mut depth: usize = 0;
    let mut state = Scan::Code;
    for raw in text.lines() {
        if let Scan::Heredoc(ref delimiter) = state {
            if raw.trim() == delimiter {
                state = Scan::Code;
                lines.push(Line::indented(depth, raw.trim()));
            } else {
                lines.push(Line::verbatim(raw));
            }
            continue;
        }
        if state == Scan::BlockComment {
            lines.push(Line::verbatim(raw));
            if raw.contains("*/") {
                state = Scan::Code;
            }
            continue;
        }
        let trimmed = raw.trim();
        let (opens, closes_first, next_state) = scan(trimmed);
        let indent = if closes_first {
            depth.saturating_sub(1)
        } else {
            depth
        };
        depth = (depth as isize + opens).max(0) as usize;
        lines.push(Line::indented(indent, trimmed));
        state = next_state;
    }
    align(&mut lines);
    let mut out = String::new();
    let mut blank = true;
    for line in &lines {
        let rendered = line.render();
        if rendered.is_empty() {
            if !blank {
                out.push('\n');
            }
            blank = true;
            continue;
        }
        blank = false;
        out.push_str(&rendered);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    if out.is_empty() {
        return Ok(out);
    }
    hcl_edit::parser::parse_body(&out)
        .map_err(|e| FormatError::WouldBreak(e.message().to_string()))?;
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Scan {
    Code,
    BlockComment,
    Heredoc(String),
}

struct Line {
    indent: Option<usize>,
    text: String,
    /// For attribute lines: the key's length, to align `=`.
    key_len: Option<usize>,
}

impl Line {
    fn indented(indent: usize, text: &str) -> Line {
        Line {
            indent: Some(indent),
            key_len: attribute_key(text).map(str::len),
            text: text.to_string(),
        }
    }

    fn verbatim(text: &str) -> Line {
        Line {
            indent: None,
            text: text.trim_end().to_string(),
            key_len: None,
        }
    }

    fn render(&self) -> String {
        match self.indent {
            None => self.text.clone(),
            Some(_) if self.text.is_empty() => String::new(),
            Some(n) => format!("{}{}", "  ".repeat(n), self.text),
        }
    }
}

/// `key` of a `key = value` line.
fn attribute_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim_end();
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !line[key.len()..].trim_start().starts_with("==");
    valid.then_some(key)
}

/// Pads keys so that `=` lines up across consecutive attribute lines of the same indentation.
fn align(lines: &mut [Line]) {
    let mut i = 0;
    while i < lines.len() {
        let Some(indent) = lines[i].indent.filter(|_| lines[i].key_len.is_some()) else {
            i += 1;
            continue;
        };
        let mut j = i;
        while j < lines.len() && lines[j].indent == Some(indent) && lines[j].key_len.is_some() {
            j += 1;
        }
        let width = lines[i..j]
            .iter()
            .filter_map(|l| l.key_len)
            .max()
            .unwrap_or(0);
        for line in &mut lines[i..j] {
            if let Some((key, value)) = line.text.split_once('=') {
                line.text = format!("{:width$} = {}", key.trim_end(), value.trim_start());
            }
        }
        i = j;
    }
}

/// How a line changes the nesting depth, whether it starts by closing, and the state after it.
fn scan(line: &str) -> (isize, bool, Scan) {
    let mut depth = 0isize;
    let closes_first = line.starts_with(['}', ']', ')']);
    let mut chars = line.char_indices().peekable();
    let mut in_string = false;
    while let Some((i, c)) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '#' => break,
            '/' if line[i..].starts_with("//") => break,
            '/' if line[i..].starts_with("/*") && !line[i + 2..].contains("*/") => {
                return (depth, closes_first, Scan::BlockComment);
            }
            '<' if line[i..].starts_with("<<") => {
                let rest = line[i + 2..].trim_start_matches('-');
                let delimiter: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !delimiter.is_empty() {
                    return (depth, closes_first, Scan::Heredoc(delimiter));
                }
            }
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth -= 1,
            _ => {}
        }
    }
    (depth, closes_first, Scan::Code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_aligns_and_keeps_comments_and_heredocs() {
        let messy = "rule \"a\" {\n# why\n      resources = [\"gpucap_inference_endpoint\"]\n  enforcement=\"hard\"   \n\n\n\n  condition = <<-EOT\n      resource.name == \"x\" # not a comment\n  EOT\n  message = \"m {\"\n}\n\n";
        let want = "rule \"a\" {\n  # why\n  resources   = [\"gpucap_inference_endpoint\"]\n  enforcement = \"hard\"\n\n  condition = <<-EOT\n      resource.name == \"x\" # not a comment\n  EOT\n  message = \"m {\"\n}\n";
        assert_eq!(format(messy).unwrap(), want);
        assert_eq!(format(want).unwrap(), want, "formatting is idempotent");
    }

    #[test]
    fn invalid_files_are_not_rewritten() {
        let err = format("rule \"a\" {\n").unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Syntax {
                    line: 1,
                    column: 12,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("HCL syntax error"), "{err}");
        // Nesting the parser would take minutes over is refused first (hcl::check_nesting).
        let deep = format!("r = \"x\"\nq = {}", "( a || b || ".repeat(30));
        let err = format(&deep).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Syntax {
                    line: 2,
                    column: 197,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("more than 16 deep"), "{err}");
    }
}
