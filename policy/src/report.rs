//! Reports of a review: human text (coloured on a terminal), JSON, SARIF 2.1.0 for code scanning
//! and JUnit XML for CI test reports.

use std::collections::HashMap;
use std::io::{self, Write};

use quick_xml::Writer as XmlWriter;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::engine::{Finding, Status, Subject};
use crate::parallel;
use crate::rules::PolicySet;

/// What a review looked at and found.
pub struct Review<'a> {
    /// The rules.
    pub policies: &'a PolicySet,
    /// The resources.
    pub subjects: &'a [Subject],
    /// The findings, in order, in the parts the evaluating threads found them in (copying them
    /// into one would take a large review's memory twice).
    pub findings: &'a [Vec<Finding>],
    /// Threads to render the report on; the bytes are the same whatever the number.
    pub threads: usize,
}

impl Review<'_> {
    /// Every finding, in order.
    fn all(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().flatten()
    }

    /// The findings' parts as slices.
    fn parts(&self) -> Vec<&[Finding]> {
        self.findings.iter().map(Vec::as_slice).collect()
    }

    fn counts(&self) -> (usize, usize, usize) {
        let failed = self.all().filter(|f| f.fails()).count();
        let warned = self.all().filter(|f| f.warns()).count();
        let waived = self.all().filter(|f| f.status == Status::Waived).count();
        (failed, warned, waived)
    }

    /// Human text; `color` adds ANSI colours.
    pub fn write_text(&self, out: &mut dyn Write, color: bool) -> io::Result<()> {
        let paint = |code: &str, s: &str| paint(color, code, s);
        write_in_parts(out, &self.parts(), self.threads, |part, buf| {
            for f in part {
                write_text_finding(buf, f, color)?;
            }
            Ok(())
        })?;
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
            "findings": ITEMS,
            "summary": {
                "resources": self.subjects.len(),
                "rules": self.policies.rules.len(),
                "failed": failed,
                "warnings": warned,
                "waived": waived,
                "passed": failed == 0,
            },
        });
        write_pretty_with_items(out, &doc, &self.parts(), self.threads, |f, w| {
            f.serialize(w)
        })
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
        #[derive(serde::Serialize)]
        struct Log {
            #[serde(rename = "$schema")]
            schema: &'static str,
            version: &'static str,
            runs: [Run; 1],
        }
        #[derive(serde::Serialize)]
        struct Run {
            tool: Json,
            results: &'static str,
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
                results: ITEMS,
            }],
        };
        write_pretty_with_items(out, &log, &self.parts(), self.threads, |f, w| {
            SarifResult::of(f).serialize(w)
        })
    }

    /// JUnit XML: a suite per rule, a test case per resource it applies to.
    pub fn write_junit(&self, out: &mut dyn Write) -> io::Result<()> {
        // Indexed once: a linear search per (rule, resource) pair is quadratic on large plans.
        let by_case: HashMap<(&str, &str, Option<&str>), &Finding> = self
            .all()
            .map(|f| ((&*f.rule, &*f.address, f.terraform_address.as_deref()), f))
            .collect();
        // Counts come first in the XML, so they are taken before the cases are written.
        let mut failures: HashMap<&str, usize> = HashMap::new();
        for f in self.all().filter(|f| f.fails()) {
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
        let total_failed = self.all().filter(|f| f.fails()).count();
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
            let cases: Vec<&Subject> = self
                .subjects
                .iter()
                .filter(|s| rule.applies(&s.type_name, &s.action))
                .collect();
            let tests = cases.len().to_string();
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
            write_in_parts(w.get_mut(), &[&cases], self.threads, |part, buf| {
                let mut w = XmlWriter::new(buf);
                for s in part {
                    write_junit_case(&mut w, s, (&rule.name, &rule_name), &by_case)?;
                }
                Ok(())
            })?;
            line(&mut w, "  ")?;
            w.write_event(Event::End(BytesEnd::new("testsuite")))?;
        }
        line(&mut w, "")?;
        w.write_event(Event::End(BytesEnd::new("testsuites")))?;
        line(&mut w, "")?;
        w.into_inner().flush()
    }
}

/// A test case of a JUnit suite: the resource, and what the rule found on it.
fn write_junit_case<W: Write>(
    w: &mut XmlWriter<W>,
    s: &Subject,
    (rule, rule_name): (&str, &str),
    by_case: &HashMap<(&str, &str, Option<&str>), &Finding>,
) -> io::Result<()> {
    let address = s.address();
    let name = printable(s.terraform_address.as_deref().unwrap_or(&address));
    let key = (rule, address.as_str(), s.terraform_address.as_deref());
    w.write_event(Event::Text(BytesText::from_escaped("\n    ")))?;
    w.write_event(Event::Start(
        BytesStart::new("testcase")
            .with_attributes([("classname", rule_name), ("name", name.as_str())]),
    ))?;
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
                BytesStart::new("skipped").with_attributes([("message", detail.as_str())]),
            ))?;
        } else {
            w.write_event(Event::Start(BytesStart::new("system-out")))?;
            w.write_event(Event::Text(BytesText::new(&detail)))?;
            w.write_event(Event::End(BytesEnd::new("system-out")))?;
        }
    }
    w.write_event(Event::End(BytesEnd::new("testcase")))
}

/// One finding as human text.
fn write_text_finding(out: &mut dyn Write, f: &Finding, color: bool) -> io::Result<()> {
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
        paint(color, code, label),
        paint(color, "1", &f.rule),
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
    writeln!(out, "  {attribute}rule at {}\n", f.rule_location)
}

/// `s` in the ANSI colour `code` when `color` is on.
fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Items rendered per task: large enough that a task outweighs its thread, small enough that
/// a window of them (one per thread) is a bounded amount of memory.
const PART: usize = 2048;

/// Writes `items` (given in any number of slices) as `render` writes each part of them,
/// rendering parts on up to `threads` threads while earlier ones are written, in order: a report
/// is never held whole, and its bytes do not depend on the number of threads.
fn write_in_parts<T: Sync>(
    out: &mut dyn Write,
    items: &[&[T]],
    threads: usize,
    render: impl Fn(&[T], &mut Vec<u8>) -> io::Result<()> + Sync,
) -> io::Result<()> {
    let parts: Vec<&[T]> = items.iter().flat_map(|i| i.chunks(PART)).collect();
    parallel::for_each_ordered(
        &parts,
        threads,
        |part| {
            let mut buf = Vec::new();
            render(part, &mut buf).map(|()| buf)
        },
        |rendered| out.write_all(&rendered?),
    )
}

/// Stands in a report's document for its long array: serialized as a string, then replaced by
/// the array's elements rendered in parallel.
const ITEMS: &str = "\u{1}gpucap-items\u{1}";

/// Pretty JSON of `doc` and a newline, with the string [`ITEMS`] in it replaced by the array of
/// every one of `items` as `item` prints it. Each element is printed alone by a [`Nested`]
/// printer that starts at the array's depth, so the bytes are those serde's pretty printer gives
/// for the whole document (a test holds it).
fn write_pretty_with_items<T: Sync>(
    out: &mut dyn Write,
    doc: &impl Serialize,
    items: &[&[T]],
    threads: usize,
    item: impl Fn(&T, &mut serde_json::Serializer<&mut Vec<u8>, Nested>) -> serde_json::Result<()>
    + Sync,
) -> io::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    let marker = serde_json::to_string(ITEMS)?;
    let Some(at) = text.find(&marker) else {
        return Err(io::Error::other("report template without its items"));
    };
    let (head, tail) = (&text[..at], &text[at + marker.len()..]);
    // The array's key sits on the line the marker is on, two spaces a level.
    let depth = head.rsplit('\n').next().map_or(0, |line| {
        (line.len() - line.trim_start_matches(' ').len()) / 2
    });
    let mut array = Nested {
        depth,
        has_value: false,
    };
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    out.write_all(head.as_bytes())?;
    array.open(&mut out, b"[")?;
    if let Some(first) = items.iter().find_map(|i| i.first()) {
        write_in_parts(&mut out, items, threads, |part, buf| {
            for element in part {
                array.item(buf, std::ptr::eq(element, first))?;
                let printer = Nested {
                    depth: array.depth,
                    has_value: false,
                };
                item(
                    element,
                    &mut serde_json::Serializer::with_formatter(&mut *buf, printer),
                )?;
            }
            Ok(())
        })?;
        array.has_value = true;
    }
    array.close(&mut out, b"]")?;
    out.write_all(tail.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Pretty JSON that starts `depth` levels deep: what serde's pretty printer writes for a value at
/// that depth of a larger document (two spaces a level), so a value printed alone can be spliced
/// into it.
struct Nested {
    depth: usize,
    has_value: bool,
}

impl Nested {
    fn newline(&self, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        out.write_all(b"\n")?;
        for _ in 0..self.depth {
            out.write_all(b"  ")?;
        }
        Ok(())
    }

    fn open(&mut self, out: &mut (impl Write + ?Sized), bracket: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        out.write_all(bracket)
    }

    fn close(&mut self, out: &mut (impl Write + ?Sized), bracket: &[u8]) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.newline(out)?;
        }
        out.write_all(bracket)
    }

    fn item(&self, out: &mut (impl Write + ?Sized), first: bool) -> io::Result<()> {
        if !first {
            out.write_all(b",")?;
        }
        self.newline(out)
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.open(out, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.close(out, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, out: &mut W, first: bool) -> io::Result<()> {
        self.item(out, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.open(out, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        self.close(out, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, out: &mut W, first: bool) -> io::Result<()> {
        self.item(out, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, out: &mut W) -> io::Result<()> {
        out.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// A SARIF result: one finding, located at its rule and naming its resource. Fields are in
/// alphabetical order, as the report has always printed them.
#[derive(Serialize)]
struct SarifResult<'a> {
    level: &'static str,
    locations: [SarifLocation<'a>; 1],
    message: SarifText,
    properties: SarifProperties<'a>,
    #[serde(rename = "ruleId")]
    rule_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressions: Option<[SarifSuppression; 1]>,
}

#[derive(Serialize)]
struct SarifLocation<'a> {
    #[serde(rename = "logicalLocations")]
    logical: [SarifLogical<'a>; 1],
    #[serde(rename = "physicalLocation")]
    physical: SarifPhysical,
}

#[derive(Serialize)]
struct SarifLogical<'a> {
    #[serde(rename = "fullyQualifiedName")]
    name: &'a str,
    kind: &'static str,
}

#[derive(Serialize)]
struct SarifPhysical {
    #[serde(rename = "artifactLocation")]
    artifact: SarifUri,
    region: SarifRegion,
}

#[derive(Serialize)]
struct SarifUri {
    uri: String,
}

#[derive(Serialize)]
struct SarifRegion {
    #[serde(rename = "startColumn")]
    column: u64,
    #[serde(rename = "startLine")]
    line: u64,
}

#[derive(Serialize)]
struct SarifText {
    text: String,
}

#[derive(Serialize)]
struct SarifProperties<'a> {
    address: &'a str,
    attribute: &'a str,
    enforcement: &'static str,
}

#[derive(Serialize)]
struct SarifSuppression {
    justification: String,
    kind: &'static str,
}

impl SarifResult<'_> {
    fn of(f: &Finding) -> SarifResult<'_> {
        let (file, line, column) = split_location(&f.rule_location);
        SarifResult {
            level: match f.status {
                Status::Failed => "error",
                Status::Advisory | Status::Overridden => "warning",
                Status::Waived => "note",
            },
            locations: [SarifLocation {
                logical: [SarifLogical {
                    name: f.terraform_address.as_deref().unwrap_or(&f.address),
                    kind: "resource",
                }],
                physical: SarifPhysical {
                    artifact: SarifUri { uri: file },
                    region: SarifRegion { column, line },
                },
            }],
            message: SarifText { text: f.detail() },
            properties: SarifProperties {
                address: &f.address,
                attribute: &f.attribute,
                enforcement: f.enforcement,
            },
            rule_id: &f.rule,
            suppressions: f.waiver.as_ref().map(|w| {
                [SarifSuppression {
                    justification: format!(
                        "{} (waiver \"{}\", until {})",
                        w.reason, w.name, w.expires
                    ),
                    kind: "external",
                }]
            }),
        }
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::engine::{Evaluator, Options};
    use crate::schema::Schemas;

    /// A plan with `n` endpoints on pools in and out of the EU, some of them PII.
    pub(crate) fn plan(n: usize) -> String {
        let mut changes = vec![
            json!({"address": "gpucap_gpu_pool.eu", "mode": "managed", "type": "gpucap_gpu_pool",
                "change": {"actions": ["create"], "before": null, "after": {"name": "eu", "region": "eu-central-1", "jurisdiction": "EU", "tenancy": "dedicated", "capacity_type": "on_demand"}}}),
            json!({"address": "gpucap_gpu_pool.us", "mode": "managed", "type": "gpucap_gpu_pool",
                "change": {"actions": ["create"], "before": null, "after": {"name": "us", "region": "us-east-1", "jurisdiction": "US", "tenancy": "shared", "capacity_type": "spot"}}}),
        ];
        for i in 0..n {
            let class = ["pii", "public", "confidential"][i % 3];
            let pool = ["eu", "us"][i % 2];
            changes.push(
                json!({"address": format!("gpucap_inference_endpoint.e{i}"), "mode": "managed",
                "type": "gpucap_inference_endpoint",
                "change": {"actions": ["create"], "before": null, "after": {"name": format!("e{i}"),
                    "pools": [pool], "data_residency": {"classification": class},
                    "labels": {"note": "tab\there, quote \" and <xml> & ctrl \u{7}"}}}}),
            );
        }
        json!({"format_version": "1.2", "resource_changes": changes}).to_string()
    }

    /// Runs `f` on the review of the starter pack over `plan(n)`, done on `threads` threads.
    fn with_review<R>(n: usize, threads: usize, f: impl FnOnce(&Review) -> R) -> R {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../modules/policy-pack/policies");
        let set = crate::rules::load(&[dir], Schemas::gpucap()).unwrap();
        let text = plan(n);
        let wanted = |t: &str| t.starts_with("gpucap_");
        let plan = crate::plan_json::read(
            text.as_bytes(),
            "plan.json",
            Schemas::gpucap(),
            &wanted,
            threads,
        )
        .unwrap();
        let mut options = Options::from_env(Vec::new());
        options.now = "2026-11-30T00:00:00Z".parse().unwrap();
        let evaluator = Evaluator::new(set);
        // In as many parts as threads: the reports must print them as one.
        let (subjects, findings) = plan.review(&evaluator, &options, threads).unwrap();
        assert_eq!(findings.len(), threads);
        let count: usize = findings.iter().map(Vec::len).sum();
        assert!(count > 2 * PART, "{count} findings");
        f(&Review {
            policies: evaluator.policies(),
            subjects: &subjects,
            findings: &findings,
            threads,
        })
    }

    fn printed(review: &Review, format: &str) -> Vec<u8> {
        let mut out = Vec::new();
        match format {
            "text" => review.write_text(&mut out, true),
            "json" => review.write_json(&mut out),
            "sarif" => review.write_sarif(&mut out),
            _ => review.write_junit(&mut out),
        }
        .unwrap();
        out
    }

    #[test]
    fn reports_are_the_same_bytes_whatever_the_threads() {
        let formats = ["text", "json", "sarif", "junit"];
        let all = |r: &Review| formats.map(|f| printed(r, f));
        let one = with_review(10_000, 1, all);
        for threads in [2, 5] {
            let many = with_review(10_000, threads, all);
            for (format, (a, b)) in formats.iter().zip(one.iter().zip(&many)) {
                assert!(
                    a == b,
                    "{format} on {threads} threads differs from one thread"
                );
            }
        }
    }

    /// The JSON reports are printed in parts; together they must be what serde prints for the
    /// whole document.
    #[test]
    fn json_reports_are_what_serde_prints_whole() {
        with_review(10_000, 3, |review| {
            let (failed, warned, waived) = review.counts();
            #[derive(Serialize)]
            struct Whole<'a> {
                findings: Vec<&'a Finding>,
                summary: Json,
            }
            let whole = Whole {
                findings: review.all().collect(),
                summary: json!({
                    "resources": review.subjects.len(),
                    "rules": review.policies.rules.len(),
                    "failed": failed,
                    "warnings": warned,
                    "waived": waived,
                    "passed": failed == 0,
                }),
            };
            let mut want = serde_json::to_vec_pretty(&whole).unwrap();
            want.push(b'\n');
            assert!(
                printed(review, "json") == want,
                "JSON differs from serde's whole document"
            );
            let sarif: Json = serde_json::from_slice(&printed(review, "sarif")).unwrap();
            let results = sarif["runs"][0]["results"].as_array().unwrap();
            assert_eq!(results.len(), review.all().count());
            let last = review.all().last().unwrap();
            assert_eq!(
                results.last().unwrap(),
                &serde_json::to_value(SarifResult::of(last)).unwrap()
            );
        });
    }

    #[test]
    fn empty_arrays_print_as_serde_prints_them() {
        let doc = json!({"a": ITEMS, "b": {"c": [ITEMS]}});
        let mut out = Vec::new();
        write_pretty_with_items(&mut out, &doc, &[&[] as &[u8]], 2, |v, w| v.serialize(w)).unwrap();
        let want = serde_json::to_string_pretty(&json!({"a": [], "b": {"c": [ITEMS]}})).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want + "\n");
        let items = [json!({"x": [1, {"y": "a\nb"}]}), json!([])];
        let doc = json!({"b": {"c": ITEMS}});
        let want = serde_json::to_string_pretty(&json!({"b": {"c": items}})).unwrap();
        for parts in [&[&items[..]][..], &[&[], &items[..1], &[], &items[1..]]] {
            let mut out = Vec::new();
            write_pretty_with_items(&mut out, &doc, parts, 2, |v, w| v.serialize(w)).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want.clone() + "\n");
        }
    }
}
