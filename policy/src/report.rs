//! Reports of a review: human text (coloured on a terminal), JSON, SARIF 2.1.0 for code scanning
//! and JUnit XML for CI test reports.

use std::fmt::Write as _;

use serde_json::json;

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
    pub fn text(&self, color: bool) -> String {
        let paint = |code: &str, s: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        for f in self.findings {
            let (label, code) = match f.status {
                Status::Failed => ("FAIL", "1;31"),
                Status::Advisory => ("WARN", "1;33"),
                Status::Overridden => ("OVERRIDDEN", "1;33"),
                Status::Waived => ("WAIVED", "1;36"),
            };
            let at = match &f.terraform_address {
                Some(a) if *a != f.address => format!("{} ({a})", f.address),
                _ => f.address.clone(),
            };
            let _ = writeln!(
                out,
                "{} {} [{}] {at}",
                paint(code, label),
                paint("1", &f.rule),
                f.enforcement
            );
            let _ = writeln!(out, "  {}", f.message);
            if let Some(e) = &f.evaluation_error {
                let _ = writeln!(out, "  evaluation error (counts as a violation): {e}");
            }
            if let Some(w) = &f.waiver {
                let _ = writeln!(
                    out,
                    "  waived by \"{}\" until {} ({} days left): {}",
                    w.name, w.expires, w.days_left, w.reason
                );
            }
            if f.status == Status::Overridden {
                let _ = writeln!(out, "  soft rule overridden for this run");
            }
            let attribute = if f.attribute.is_empty() {
                String::new()
            } else {
                format!("attribute {} · ", f.attribute)
            };
            let _ = writeln!(out, "  {attribute}rule at {}", f.rule_location);
            out.push('\n');
        }
        let (failed, warned, waived) = self.counts();
        let summary = format!(
            "{} resources, {} rules: {failed} failed, {warned} warnings, {waived} waived",
            self.subjects.len(),
            self.policies.rules.len()
        );
        let _ = writeln!(
            out,
            "{}",
            if failed > 0 {
                paint("1;31", &summary)
            } else {
                paint("1;32", &summary)
            }
        );
        out
    }

    /// JSON: the findings and a summary.
    pub fn json(&self) -> String {
        let (failed, warned, waived) = self.counts();
        let doc = json!({
            "findings": self.findings,
            "summary": {
                "resources": self.subjects.len(),
                "rules": self.policies.rules.len(),
                "failed": failed,
                "warnings": warned,
                "waived": waived,
                "passed": failed == 0,
            }
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }

    /// SARIF 2.1.0: one result per finding, located at the rule and naming the resource.
    pub fn sarif(&self) -> String {
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
        let results: Vec<_> = self
            .findings
            .iter()
            .map(|f| {
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
            .collect();
        let doc = json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "gpucap-policy",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://github.com/gpucap/gpucap",
                    "rules": rules,
                }},
                "results": results,
            }],
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }

    /// JUnit XML: a suite per rule, a test case per resource it applies to.
    pub fn junit(&self) -> String {
        // Indexed once: a linear search per (rule, resource) pair is quadratic on large plans.
        let by_case: std::collections::HashMap<(&str, String, Option<&str>), &Finding> = self
            .findings
            .iter()
            .map(|f| {
                (
                    (
                        f.rule.as_str(),
                        f.address.clone(),
                        f.terraform_address.as_deref(),
                    ),
                    f,
                )
            })
            .collect();
        let mut suites = String::new();
        let (mut total, mut total_failed) = (0, 0);
        for rule in &self.policies.rules {
            let mut cases = String::new();
            let (mut tests, mut failures) = (0, 0);
            for s in self.subjects.iter().filter(|s| rule.applies(s)) {
                tests += 1;
                let name = s.terraform_address.clone().unwrap_or_else(|| s.address());
                let key = (
                    rule.name.as_str(),
                    s.address(),
                    s.terraform_address.as_deref(),
                );
                let body = match by_case.get(&key) {
                    None => String::new(),
                    Some(f) if f.fails() => {
                        failures += 1;
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
                let _ = writeln!(
                    cases,
                    "    <testcase classname=\"{}\" name=\"{}\">{body}</testcase>",
                    xml(&rule.name),
                    xml(&name)
                );
            }
            total += tests;
            total_failed += failures;
            let _ = write!(
                suites,
                "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">\n{cases}  </testsuite>\n",
                xml(&rule.name)
            );
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"gpucap-policy\" tests=\"{total}\" failures=\"{total_failed}\">\n{suites}</testsuites>\n"
        )
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
