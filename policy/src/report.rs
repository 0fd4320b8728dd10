//! Reports of a review: human text (coloured on a terminal), JSON, SARIF 2.1.0 for code scanning
//! and JUnit XML for CI test reports.

use std::io::{self, Write};

use quick_xml::Writer as XmlWriter;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::ser::{Serialize, Serializer};
use serde_json::{Value as Json, json};

use crate::engine::{Finding, Status, Subject};
use crate::rules::PolicySet;

/// What a review looked at and found.
pub struct Review<'a> {
    /// The rules.
    pub policies: &'a PolicySet,
    /// The resources.
    pub subjects: &'a [Subject],
    /// The findings.
    pub findings: &'a [Finding],
}

impl Review<'_> {
    fn counts(&self) -> (usize, usize, usize) {
        let failed = self.findings.iter().filter(|f| f.fails()).count();
        let warned = self.findings.iter().filter(|f| f.warns()).count();
        let waived = self
            .findings
            .iter()
            .filter(|f| f.status == Status::Waived)
            .count();
        (failed, warned, waived)
    }

    /// Human text; `color` adds ANSI colours.
    pub fn write_text(&self, out: &mut dyn Write, color: bool) -> io::Result<()> {
        let paint = |code: &str, s: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        for f in self.findings {
            let (label, code) = match f.status {
                Status::Failed => ("FAIL", "1;31"),
                Status::Advisory => ("WARN", "1;33"),
                Status::Overridden => ("OVERRIDDEN", "1;33"),
                Status::Waived => ("WAIVED", "1;36"),
            };
            let at = match &f.terraform_address {
                Some(a) if *a != f.address => format!("{} ({a})", f.address),
                _ => f.address.to_string(),
            };
            writeln!(
                out,
                "{} {} [{}] {at}",
                paint(code, label),
                paint("1", &f.rule),
                f.enforcement
            )?;
            writeln!(out, "  {}", f.message)?;
            if let Some(e) = &f.evaluation_error {
                writeln!(out, "  evaluation error (counts as a violation): {e}")?;
            }
            if let Some(w) = &f.waiver {
                writeln!(
                    out,
                    "  waived by \"{}\" until {} ({} days left): {}",
                    w.name, w.expires, w.days_left, w.reason
                )?;
            }
            if f.status == Status::Overridden {
                writeln!(out, "  soft rule overridden for this run")?;
            }
            let attribute = if f.attribute.is_empty() {
                String::new()
            } else {
                format!("attribute {} · ", f.attribute)
            };
            writeln!(out, "  {attribute}rule at {}\n", f.rule_location)?;
        }
        let (failed, warned, waived) = self.counts();
        let summary = format!(
            "{} resources, {} rules: {failed} failed, {warned} warnings, {waived} waived",
            self.subjects.len(),
            self.policies.rules.len()
        );
        writeln!(
            out,
            "{}",
            if failed > 0 {
                paint("1;31", &summary)
            } else {
                paint("1;32", &summary)
            }
        )
    }

    /// JSON: the findings and a summary.
    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        let (failed, warned, waived) = self.counts();
        let doc = json!({
            "resources": self.subjects.len(),
            "rules": self.policies.rules.len(),
            "failed": failed,
            "warnings": warned,
            "waived": waived,
            "passed": failed == 0,
        });
        #[derive(serde::Serialize)]
        struct Report<'a> {
            findings: &'a [Finding],
            summary: Json,
        }
        let report = Report {
            findings: self.findings,
            summary: doc,
        };
        write_pretty(out, &report)
    }

    /// SARIF 2.1.0: one result per finding, located at the rule and naming the resource.
    pub fn write_sarif(&self, out: &mut dyn Write) -> io::Result<()> {
        let rules: Vec<_> = self
            .policies
            .rules
            .iter()
            .map(|r| {
                json!({
                    "id": r.name,
                    "shortDescription": {"text": if r.description.is_empty() { &r.message } else { &r.description }},
                    "defaultConfiguration": {"level": match r.enforcement {
                        crate::rules::Enforcement::Advisory => "warning",
                        _ => "error",
                    }},
                    "properties": {"enforcement": r.enforcement.as_str()},
                })
            })
            .collect();
        let results = Streamed(|| {
            self.findings.iter().map(|f| {
                let (file, line, column) = split_location(&f.rule_location);
                let mut result = json!({
                    "ruleId": f.rule,
                    "level": match f.status {
                        Status::Failed => "error",
                        Status::Advisory | Status::Overridden => "warning",
                        Status::Waived => "note",
                    },
                    "message": {"text": f.detail()},
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": {"uri": file},
                            "region": {"startLine": line, "startColumn": column},
                        },
                        "logicalLocations": [{
                            "fullyQualifiedName": f.terraform_address.as_deref().unwrap_or(&f.address),
                            "kind": "resource",
                        }],
                    }],
                    "properties": {"address": f.address, "attribute": f.attribute, "enforcement": f.enforcement},
                });
                if let Some(w) = &f.waiver {
                    result["suppressions"] = json!([{
                        "kind": "external",
                        "justification": format!("{} (waiver \"{}\", until {})", w.reason, w.name, w.expires),
                    }]);
                }
                result
            })
        });
        #[derive(serde::Serialize)]
        struct Log<R> {
            #[serde(rename = "$schema")]
            schema: &'static str,
            version: &'static str,
            runs: [Run<R>; 1],
        }
        #[derive(serde::Serialize)]
        struct Run<R> {
            tool: Json,
            results: R,
        }
        let log = Log {
            schema: "https://json.schemastore.org/sarif-2.1.0.json",
            version: "2.1.0",
            runs: [Run {
                tool: json!({"driver": {
                    "name": "gpucap-policy",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://github.com/gpucap/gpucap",
                    "rules": rules,
                }}),
                results,
            }],
        };
        write_pretty(out, &log)
    }

    /// JUnit XML: a suite per rule, a test case per resource it applies to.
    pub fn write_junit(&self, out: &mut dyn Write) -> io::Result<()> {
        // Indexed once: a linear search per (rule, resource) pair is quadratic on large plans.
        let by_case: std::collections::HashMap<(&str, &str, Option<&str>), &Finding> = self
            .findings
            .iter()
            .map(|f| ((&*f.rule, &*f.address, f.terraform_address.as_deref()), f))
            .collect();
        // Counts come first in the XML, so they are taken before the cases are written.
        let mut failures: std::collections::HashMap<&str, usize> = Default::default();
        for f in self.findings.iter().filter(|f| f.fails()) {
            *failures.entry(&*f.rule).or_default() += 1;
        }
        let tests_of = |rule: &crate::rules::Rule| {
            self.subjects
                .iter()
                .filter(|s| rule.applies(&s.type_name, &s.action))
                .count()
        };
        let rules = &self.policies.rules;
        let total: usize = rules.iter().map(tests_of).sum();
        let total_failed = self.findings.iter().filter(|f| f.fails()).count();
        // Written as it goes (a review of many resources is never held whole), by an XML writer
        // that escapes every text and attribute; one line per test case, as CI tools show them.
        let mut w = XmlWriter::new(io::BufWriter::new(out));
        let line = |w: &mut XmlWriter<_>, indent: &str| {
            w.write_event(Event::Text(BytesText::from_escaped(format!("\n{indent}"))))
        };
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        line(&mut w, "")?;
        let (total, total_failed) = (total.to_string(), total_failed.to_string());
        w.write_event(Event::Start(BytesStart::new("testsuites").with_attributes(
            [
                ("name", "gpucap-policy"),
                ("tests", total.as_str()),
                ("failures", total_failed.as_str()),
            ],
        )))?;
        for rule in rules {
            let tests = tests_of(rule).to_string();
            let failed = failures
                .get(rule.name.as_str())
                .copied()
                .unwrap_or(0)
                .to_string();
            let rule_name = printable(&rule.name);
            line(&mut w, "  ")?;
            w.write_event(Event::Start(BytesStart::new("testsuite").with_attributes(
                [
                    ("name", rule_name.as_str()),
                    ("tests", tests.as_str()),
                    ("failures", failed.as_str()),
                    ("errors", "0"),
                    ("skipped", "0"),
                ],
            )))?;
            for s in self
                .subjects
                .iter()
                .filter(|s| rule.applies(&s.type_name, &s.action))
            {
                let address = s.address();
                let name = printable(s.terraform_address.as_deref().unwrap_or(&address));
                let key = (
                    rule.name.as_str(),
                    address.as_str(),
                    s.terraform_address.as_deref(),
                );
                line(&mut w, "    ")?;
                w.write_event(Event::Start(BytesStart::new("testcase").with_attributes([
                    ("classname", rule_name.as_str()),
                    ("name", name.as_str()),
                ])))?;
                if let Some(f) = by_case.get(&key) {
                    let detail = printable(&f.detail());
                    if f.fails() {
                        let message = printable(&f.message);
                        w.write_event(Event::Start(BytesStart::new("failure").with_attributes([
                            ("message", message.as_str()),
                            ("type", f.enforcement),
                        ])))?;
                        w.write_event(Event::Text(BytesText::new(&detail)))?;
                        w.write_event(Event::End(BytesEnd::new("failure")))?;
                    } else if f.status == Status::Waived {
                        w.write_event(Event::Empty(
                            BytesStart::new("skipped")
                                .with_attributes([("message", detail.as_str())]),
                        ))?;
                    } else {
                        w.write_event(Event::Start(BytesStart::new("system-out")))?;
                        w.write_event(Event::Text(BytesText::new(&detail)))?;
                        w.write_event(Event::End(BytesEnd::new("system-out")))?;
                    }
                }
                w.write_event(Event::End(BytesEnd::new("testcase")))?;
            }
            line(&mut w, "  ")?;
            w.write_event(Event::End(BytesEnd::new("testsuite")))?;
        }
        line(&mut w, "")?;
        w.write_event(Event::End(BytesEnd::new("testsuites")))?;
        line(&mut w, "")?;
        w.into_inner().flush()
    }
}

/// Pretty JSON and a newline. The serializer writes a few bytes at a time: a buffer of a concrete
/// type in front of `out` keeps those writes from each being a dynamic call.
fn write_pretty(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    let mut buffered = io::BufWriter::with_capacity(1 << 16, out);
    serde_json::to_writer_pretty(&mut buffered, value)?;
    writeln!(buffered)?;
    buffered.flush()
}

/// A sequence serialized as it is produced, so that a report of many findings is never held whole
/// in memory.
struct Streamed<F>(F);

impl<F, I> Serialize for Streamed<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((self.0)())
    }
}

fn split_location(loc: &str) -> (String, u64, u64) {
    let mut parts = loc.rsplitn(3, ':');
    let column = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
    let line = parts.next().and_then(|l| l.parse().ok()).unwrap_or(1);
    (parts.next().unwrap_or(loc).to_string(), line, column)
}

/// The text without the control characters XML 1.0 cannot carry (tabs and newlines stay).
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}
