//! Reports of a review: human text (coloured on a terminal), JSON, SARIF 2.1.0 for code scanning
//! and JUnit XML for CI test reports.

use std::io::{self, Write};

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
        write!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"gpucap-policy\" tests=\"{total}\" failures=\"{total_failed}\">\n"
        )?;
        for rule in rules {
            writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"0\">",
                xml(&rule.name),
                tests_of(rule),
                failures.get(rule.name.as_str()).copied().unwrap_or(0)
            )?;
            for s in self
                .subjects
                .iter()
                .filter(|s| rule.applies(&s.type_name, &s.action))
            {
                let name = s.terraform_address.clone().unwrap_or_else(|| s.address());
                let address = s.address();
                let key = (
                    rule.name.as_str(),
                    address.as_str(),
                    s.terraform_address.as_deref(),
                );
                let body = match by_case.get(&key) {
                    None => String::new(),
                    Some(f) if f.fails() => {
                        format!(
                            "<failure message=\"{}\" type=\"{}\">{}</failure>",
                            xml(&f.message),
                            f.enforcement,
                            xml(&f.detail())
                        )
                    }
                    Some(f) if f.status == Status::Waived => {
                        format!("<skipped message=\"{}\"/>", xml(&f.detail()))
                    }
                    Some(f) => format!("<system-out>{}</system-out>", xml(&f.detail())),
                };
                writeln!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\">{body}</testcase>",
                    xml(&rule.name),
                    xml(&name)
                )?;
            }
            writeln!(out, "  </testsuite>")?;
        }
        writeln!(out, "</testsuites>")
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

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .fold(String::new(), |mut out, c| {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&apos;"),
                c => out.push(c),
            }
            out
        })
}
