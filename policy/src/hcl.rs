//! Reading the HCL of policy files: blocks and their attributes as plain values with the spans they
//! were written at, so every problem can point at the file, line and column.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use hcl_edit::Span;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Block, Body};
use serde_json::Value as Json;

use crate::source::{Location, Problem, SourceFile, did_you_mean};

/// The deepest nesting of parentheses, brackets, braces and template interpolations a file may
/// have. Rule files need a few levels. The HCL parser backtracks on unclosed parentheses, its time
/// doubling with each level (300 bytes of `( a || b || ` took 47 s at 25 levels), so deeper text
/// is refused before it is parsed: at this depth the worst case parses in about 0.1 s.
pub const MAX_NESTING: usize = 16;

/// Parses a file's body; a syntax error is a located problem.
pub fn parse(file: &Arc<SourceFile>) -> Result<Body, Problem> {
    if let Err(offset) = check_nesting(&file.text) {
        return Err(Problem::error(
            Some(file.location(offset, offset + 1)),
            too_deep(),
        ));
    }
    hcl_edit::parser::parse_body(&file.text).map_err(|e| {
        let loc = e.location();
        let offset = byte_offset(&file.text, loc.line(), loc.column());
        Problem::error(
            Some(file.location(offset, offset + 1)),
            format!("HCL syntax error: {}", e.message()),
        )
    })
}

/// What [`check_nesting`] refusing a file says.
pub fn too_deep() -> String {
    format!("brackets nest more than {MAX_NESTING} deep here; policy files never need as many")
}

/// Where, if anywhere, `text` nests brackets deeper than [`MAX_NESTING`]: the byte offset of the
/// first bracket past the limit. Brackets inside string literals, heredocs and comments do not
/// count; those of `${…}` and `%{…}` templates inside strings do, since the parser reads them.
pub fn check_nesting(text: &str) -> Result<(), usize> {
    /// What the scanner is inside.
    enum Frame {
        Bracket,
        Template,
        Quoted,
        Heredoc(String),
    }
    /// Enters a bracket or template opened at `at`, unless that is one level too deep.
    fn open(
        stack: &mut Vec<Frame>,
        depth: &mut usize,
        frame: Frame,
        at: usize,
    ) -> Result<(), usize> {
        *depth += 1;
        if *depth > MAX_NESTING {
            return Err(at);
        }
        stack.push(frame);
        Ok(())
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let line_end = |from: usize| {
        bytes[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| from + p)
    };
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let opens_template = (b == b'$' || b == b'%') && next == Some(b'{');
        match stack.last() {
            Some(Frame::Quoted) => match b {
                b'\\' => i += 1,
                b'"' | b'\n' => {
                    stack.pop();
                }
                _ if opens_template => {
                    open(&mut stack, &mut depth, Frame::Template, i)?;
                    i += 1;
                }
                _ => {}
            },
            Some(Frame::Heredoc(end)) => {
                let at_line_start = i == 0 || bytes[i - 1] == b'\n';
                if at_line_start && text[i..line_end(i)].trim() == end {
                    stack.pop();
                    i = line_end(i);
                } else if opens_template {
                    open(&mut stack, &mut depth, Frame::Template, i)?;
                    i += 1;
                }
            }
            _ => match b {
                b'#' => i = line_end(i),
                b'/' if next == Some(b'/') => i = line_end(i),
                b'/' if next == Some(b'*') => {
                    i = text[i + 2..]
                        .find("*/")
                        .map_or(bytes.len(), |p| i + 2 + p + 1);
                }
                b'"' => stack.push(Frame::Quoted),
                b'<' if next == Some(b'<') => {
                    let header = &text[i + 2..line_end(i)];
                    let end = header.trim_start_matches('-').trim();
                    if !end.is_empty() && end.chars().all(|c| c.is_alphanumeric() || c == '_') {
                        stack.push(Frame::Heredoc(end.to_string()));
                        i = line_end(i);
                    } else {
                        i += 1;
                    }
                }
                b'(' | b'[' | b'{' => open(&mut stack, &mut depth, Frame::Bracket, i)?,
                b')' | b']' | b'}' => {
                    if matches!(stack.last(), Some(Frame::Bracket | Frame::Template)) {
                        stack.pop();
                        depth -= 1;
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    Ok(())
}

/// The byte offset of a 1-based line and 1-based character column.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let rest = &text[start.min(text.len())..];
    start
        + rest
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(rest.len(), |(i, _)| i)
}

/// A string attribute's text and how its characters map back to the file.
#[derive(Debug, Clone)]
pub struct Text {
    /// The decoded text.
    pub value: String,
    /// Byte offset in the file of each decoded character, plus one past the end.
    offsets: Vec<usize>,
    file: Arc<SourceFile>,
}

impl Text {
    /// The location of decoded characters `start..end`.
    pub fn location(&self, start: usize, end: usize) -> Location {
        let at = |i: usize| self.offsets[i.min(self.offsets.len() - 1)];
        self.file.location(at(start), at(end.max(start + 1)))
    }
}

/// Reads one block's attributes, remembering which were read so the rest can be reported.
pub struct BlockReader<'a> {
    /// The file.
    pub file: &'a Arc<SourceFile>,
    block: &'a Block,
    /// `rule "name"`, for messages.
    pub what: String,
    read: BTreeSet<String>,
    /// Problems found so far.
    pub problems: Vec<Problem>,
}

impl<'a> BlockReader<'a> {
    /// Starts reading `block`, described as `what` in messages.
    pub fn new(file: &'a Arc<SourceFile>, block: &'a Block, what: String) -> BlockReader<'a> {
        BlockReader {
            file,
            block,
            what,
            read: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// The location of the block's header.
    pub fn header(&self) -> Location {
        let span = self.block.ident.span().unwrap_or(0..0);
        let end = self
            .block
            .labels
            .last()
            .and_then(|l| l.span())
            .map_or(span.end, |s| s.end);
        self.file.location(span.start, end)
    }

    fn location(&self, span: Option<Range<usize>>) -> Option<Location> {
        span.map(|s| self.file.location(s.start, s.end))
    }

    fn expr(&mut self, key: &str) -> Option<&'a Expression> {
        self.read.insert(key.to_string());
        self.block.body.get_attribute(key).map(|a| &a.value)
    }

    /// Whether the attribute is set.
    pub fn has(&self, key: &str) -> bool {
        self.block.body.get_attribute(key).is_some()
    }

    /// The location of an attribute's value, or of the header when it is absent.
    pub fn value_location(&self, key: &str) -> Location {
        self.block
            .body
            .get_attribute(key)
            .and_then(|a| self.location(a.value.span()))
            .unwrap_or_else(|| self.header())
    }

    /// A required attribute is missing.
    pub fn missing(&mut self, key: &str, hint: &str) {
        let p = Problem::error(Some(self.header()), format!("{} has no `{key}`", self.what))
            .hint(hint.to_string());
        self.problems.push(p);
    }

    /// A string attribute (plain quoted string or heredoc), with its character map.
    pub fn text(&mut self, key: &str) -> Option<Text> {
        let expr = self.expr(key)?;
        let span = expr.span().unwrap_or(0..0);
        let raw = &self.file.text[span.clone()];
        let decoded = match expr {
            Expression::String(_) => decode_quoted(raw, span.start),
            Expression::HeredocTemplate(_) => decode_heredoc(raw, span.start),
            Expression::StringTemplate(_) => {
                let p = Problem::error(
                    self.location(Some(span)),
                    format!("`{key}` of {} uses HCL interpolation (`${{…}}`)", self.what),
                )
                .hint("write plain text; in CEL, join strings with `+`");
                self.problems.push(p);
                return None;
            }
            _ => None,
        };
        match decoded {
            Some((value, offsets)) => Some(Text {
                value,
                offsets,
                file: self.file.clone(),
            }),
            None => {
                let p = Problem::error(
                    self.location(Some(span)),
                    format!("`{key}` of {} must be a string", self.what),
                );
                self.problems.push(p);
                None
            }
        }
    }

    /// A list of strings, each with its location.
    pub fn strings(&mut self, key: &str) -> Option<Vec<(String, Location)>> {
        let expr = self.expr(key)?;
        let span = expr.span();
        let Some(items) = expr.as_array() else {
            let p = Problem::error(
                self.location(span),
                format!("`{key}` of {} must be a list of strings", self.what),
            )
            .hint(format!("e.g. {key} = [\"…\"]"));
            self.problems.push(p);
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let loc = self.location(item.span()).unwrap_or_else(|| self.header());
            match item.as_str() {
                Some(s) => out.push((s.to_string(), loc)),
                None => self.problems.push(Problem::error(
                    Some(loc),
                    format!("`{key}` of {} must hold only strings", self.what),
                )),
            }
        }
        Some(out)
    }

    /// Any literal value (strings, numbers, bools, null, lists and objects) as JSON.
    pub fn literal(&mut self, key: &str) -> Option<Json> {
        let expr = self.expr(key)?;
        match literal(expr) {
            Ok(v) => Some(v),
            Err(span) => {
                let p = Problem::error(
                    self.location(span),
                    format!("`{key}` of {} must be a literal value", self.what),
                )
                .hint("strings, numbers, bools, null, lists [...] and objects {...}; no references or functions");
                self.problems.push(p);
                None
            }
        }
    }

    /// Reports attributes other than those read, and any nested block.
    pub fn finish(mut self) -> Vec<Problem> {
        let known: Vec<String> = self.read.iter().cloned().collect();
        for attr in self.block.body.attributes() {
            let key = attr.key.as_str();
            if self.read.contains(key) {
                continue;
            }
            let hint = match did_you_mean(key, known.iter().map(String::as_str)) {
                Some(m) => format!("did you mean `{m}`?"),
                None => format!("{} takes {}", self.what, known.join(", ")),
            };
            let loc = self.location(attr.key.span());
            self.problems.push(
                Problem::error(loc, format!("{} has no attribute `{key}`", self.what)).hint(hint),
            );
        }
        for nested in self.block.body.blocks() {
            let loc = self.location(nested.ident.span());
            self.problems.push(Problem::error(
                loc,
                format!(
                    "{} cannot hold a `{}` block",
                    self.what,
                    nested.ident.as_str()
                ),
            ));
        }
        self.problems
    }
}

/// A literal HCL expression as JSON; the span of the first part that is not literal otherwise.
pub fn literal(expr: &Expression) -> Result<Json, Option<Range<usize>>> {
    Ok(match expr {
        Expression::Null(_) => Json::Null,
        Expression::Bool(b) => Json::Bool(*b.value()),
        Expression::Number(n) => {
            let n = n.value();
            match n.as_i64() {
                Some(i) => Json::from(i),
                None => n
                    .as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number),
            }
        }
        Expression::String(s) => Json::String(s.value().clone()),
        Expression::Array(items) => {
            Json::Array(items.iter().map(literal).collect::<Result<_, _>>()?)
        }
        Expression::Object(obj) => {
            let mut map = serde_json::Map::new();
            for (key, value) in obj.iter() {
                let k = match key {
                    hcl_edit::expr::ObjectKey::Ident(i) => i.as_str().to_string(),
                    hcl_edit::expr::ObjectKey::Expression(e) => match literal(e)? {
                        Json::String(s) => s,
                        _ => return Err(e.span()),
                    },
                };
                map.insert(k, literal(value.expr())?);
            }
            Json::Object(map)
        }
        Expression::Parenthesis(p) => literal(p.inner())?,
        other => return Err(other.span()),
    })
}

/// Decodes a quoted HCL string (`raw` includes the quotes, starting at byte `base` of the file),
/// mapping each decoded character to its byte offset in the file.
fn decode_quoted(raw: &str, base: usize) -> Option<(String, Vec<usize>)> {
    let body = raw.strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::new();
    let mut offsets = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at = base + 1 + i;
        let decoded = match c {
            '\\' => match chars.next()?.1 {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '"' => '"',
                '\\' => '\\',
                'u' | 'U' => {
                    let (_, first) = *chars.peek()?;
                    let width = if body[i + 1..].starts_with('u') { 4 } else { 8 };
                    let mut hex = String::new();
                    hex.push(first);
                    chars.next();
                    for _ in 1..width {
                        hex.push(chars.next()?.1);
                    }
                    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                }
                other => other,
            },
            // `$${` and `%%{` escape template sequences.
            '$' | '%' if body[i + 1..].starts_with(&format!("{c}{{")) => {
                chars.next();
                c
            }
            c => c,
        };
        value.push(decoded);
        offsets.push(at);
    }
    offsets.push(base + raw.len() - 1);
    Some((value, offsets))
}

/// The text of a heredoc (`raw` from `<<EOT` to the closing delimiter), with `<<-` indentation
/// removed, mapping each character to its byte offset in the file.
fn decode_heredoc(raw: &str, base: usize) -> Option<(String, Vec<usize>)> {
    let header_end = raw.find('\n')?;
    let strip_indent = raw.starts_with("<<-");
    let body_start = header_end + 1;
    let body = &raw[body_start..];
    // Everything but the last line (the delimiter).
    let body = &body[..body.trim_end_matches(|c| c != '\n').len()];
    let indent = if strip_indent {
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.len() - l.trim_start().len())
            .min()
            .unwrap_or(0)
    } else {
        0
    };
    let mut value = String::new();
    let mut offsets = Vec::new();
    let mut line_start = base + body_start;
    for line in body.split_inclusive('\n') {
        let skip = indent.min(line.len() - line.trim_start().len());
        for (i, c) in line[skip..].char_indices() {
            value.push(c);
            offsets.push(line_start + skip + i);
        }
        line_start += line.len();
    }
    if value.ends_with('\n') {
        value.pop();
        offsets.pop();
    }
    offsets.push(line_start);
    Some((value, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            name: "p.hcl".into(),
            text: text.into(),
        })
    }

    /// Found by fuzzing `policy_rules`: unclosed parentheses with two operators a level made the
    /// parser's time double with each level. Such text is refused, located, before parsing.
    #[test]
    fn deep_nesting_is_refused_before_the_parser_sees_it() {
        let fuzzed = format!("r = {}\"", "( a || b || ".repeat(25));
        let e = parse(&file(&format!("# rules\n{fuzzed}\n"))).unwrap_err();
        assert!(e.message.contains("more than 16 deep"), "{}", e.message);
        let at = e.location.expect("located");
        // The 17th parenthesis, on line 2.
        assert_eq!((at.line, at.column), (2, 5 + 16 * 12));
        assert_eq!(check_nesting(&fuzzed), Err(4 + 16 * 12));

        // Sixteen levels are allowed, and parse.
        let deepest = format!("r = {}a{}\n", "(".repeat(16), ")".repeat(16));
        assert_eq!(check_nesting(&deepest), Ok(()));
        assert!(parse(&file(&deepest)).is_ok());
        assert_eq!(check_nesting(&format!("r = [{}]", "{".repeat(16))), Err(20));

        // Brackets in strings, comments and heredocs are text; those of templates are parsed.
        let deep = "(".repeat(40);
        for text in [
            format!("m = \"{deep} \\\" {deep}\"\n"),
            format!("# {deep}\n// {deep}\n/* {deep}\n{deep} */ x = 1\n"),
            format!("m = <<-EOT\n  {deep}\n  EOT\nn = \"{deep}\"\n"),
        ] {
            assert_eq!(check_nesting(&text), Ok(()), "{text}");
        }
        assert!(check_nesting(&format!("m = \"${{{deep}\"")).is_err());
        assert!(check_nesting(&format!("m = <<EOT\n%{{ if {deep}\nEOT\n")).is_err());
    }

    #[test]
    fn quoted_strings_map_characters_through_escapes() {
        let f = file("rule \"r\" {\n  when = \"a \\\"é\\\" \\u00e9 b\"\n}\n");
        let body = parse(&f).unwrap();
        let block = body.blocks().next().unwrap();
        let mut r = BlockReader::new(&f, block, "rule \"r\"".into());
        let t = r.text("when").unwrap();
        assert_eq!(t.value, "a \"é\" é b");
        let b = t.value.chars().position(|c| c == 'b').unwrap();
        let loc = t.location(b, b + 1);
        assert_eq!((loc.line, loc.column), (2, 26));
    }

    #[test]
    fn heredocs_drop_indentation_and_keep_positions() {
        let f = file("rule \"r\" {\n  when = <<-EOT\n    a &&\n      b\n  EOT\n}\n");
        let body = parse(&f).unwrap();
        let block = body.blocks().next().unwrap();
        let mut r = BlockReader::new(&f, block, "rule \"r\"".into());
        let t = r.text("when").unwrap();
        assert_eq!(t.value, "a &&\n  b");
        let b = t.value.find('b').unwrap();
        let loc = t.location(b, b + 1);
        assert_eq!((loc.line, loc.column), (4, 7));
    }

    #[test]
    fn syntax_errors_and_unknown_attributes_are_located() {
        let f = file("rule \"r\" {\n  when = \n}\n");
        let p = parse(&f).unwrap_err();
        assert!(p.message.starts_with("HCL syntax error"), "{p}");
        assert_eq!(p.location.unwrap().line, 2);

        let f = file("rule \"r\" {\n  condtion = \"x\"\n}\n");
        let body = parse(&f).unwrap();
        let block = body.blocks().next().unwrap();
        let mut r = BlockReader::new(&f, block, "rule \"r\"".into());
        let _ = r.text("condition");
        let problems = r.finish();
        assert_eq!(
            problems[0].message,
            "rule \"r\" has no attribute `condtion`"
        );
        assert_eq!(
            problems[0].hint.as_deref(),
            Some("did you mean `condition`?")
        );
        assert_eq!(problems[0].location.as_ref().unwrap().short(), "p.hcl:2:3");
    }

    #[test]
    fn literals_become_json() {
        let f = file(
            "t {\n  v = { a = [1, 2.5, \"x\", true, null], \"b c\" = {} }\n  w = upper(\"x\")\n}\n",
        );
        let body = parse(&f).unwrap();
        let block = body.blocks().next().unwrap();
        let mut r = BlockReader::new(&f, block, "t".into());
        assert_eq!(
            r.literal("v").unwrap(),
            serde_json::json!({"a": [1, 2.5, "x", true, null], "b c": {}})
        );
        assert!(r.literal("w").is_none());
        assert!(r.problems[0].message.contains("must be a literal value"));
    }
}
