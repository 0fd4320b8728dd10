//! Rule tests (`gpucap-policy test DIR`): `case` blocks in `DIR/tests/*.hcl`, each a resource
//! (with its pools, policy, prior state, action and time) and the outcome one rule must give.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::engine::Evaluator;
use crate::engine::{Options, Placement, Status, Subject};
use crate::hcl::{self, BlockReader};
use crate::schema::Schemas;
use crate::source::{Location, Problem};

/// The outcomes a case can expect.
pub const EXPECTATIONS: &[&str] = &["pass", "fail", "warn", "waived", "error"];

/// One test case.
#[derive(Debug)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// The rule under test.
    pub rule: String,
    /// The resource, as rules see it.
    pub subject: Subject,
    /// When it is evaluated.
    pub now: DateTime<Utc>,
    /// `pass`, `fail`, `warn`, `waived` or `error`.
    pub expect: String,
    /// Text the message must contain, if given.
    pub message: Option<String>,
    /// Where the case is written.
    pub location: Location,
}

/// A case's result.
#[derive(Debug)]
pub struct Outcome {
    /// The case.
    pub case: Case,
    /// What the rule gave.
    pub got: String,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// Reads the `case` blocks of `DIR/tests/*.hcl`.
pub fn load_cases(dir: &Path, schemas: &Schemas) -> Result<Vec<Case>, Vec<Problem>> {
    let tests = dir.join("tests");
    let files = crate::rules::read_files(&[tests])?;
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let file = Arc::new(file);
        let body = match hcl::parse(&file) {
            Ok(b) => b,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        for block in body.blocks() {
            let name = block
                .labels
                .first()
                .map(|l| l.as_str().to_string())
                .unwrap_or_default();
            let mut r = BlockReader::new(&file, block, format!("case \"{name}\""));
            if block.ident.as_str() != "case" || block.labels.len() != 1 {
                problems.push(
                    Problem::error(
                        Some(r.header()),
                        "test files hold `case \"NAME\" { … }` blocks",
                    )
                    .hint("see docs/guides/policy-cli.md for the format"),
                );
                continue;
            }
            if let Some(case) = read_case(&mut r, name, schemas) {
                cases.push(case);
            }
            problems.extend(r.finish());
        }
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(problems)
    }
}

fn read_case(r: &mut BlockReader<'_>, name: String, schemas: &Schemas) -> Option<Case> {
    let rule = r.text("rule").map(|t| t.value);
    let type_name = r.text("resource_type").map(|t| t.value);
    let resource = r.literal("resource");
    let pools = r.literal("pools").unwrap_or(Json::Array(Vec::new()));
    let policy = r.literal("policy").unwrap_or(Json::Null);
    let prior = r.literal("prior").unwrap_or(Json::Null);
    let action = r.text("action").map_or("create".to_string(), |t| t.value);
    let now = match r.text("now") {
        Some(t) => match DateTime::parse_from_rfc3339(&t.value) {
            Ok(d) => d.with_timezone(&Utc),
            Err(e) => {
                r.problems.push(
                    Problem::error(
                        Some(t.location(0, t.value.chars().count())),
                        format!("`now` is not an RFC 3339 time: {e}"),
                    )
                    .hint("e.g. \"2026-11-23T12:00:00Z\""),
                );
                Utc::now()
            }
        },
        None => Utc::now(),
    };
    let expect = match r.text("expect") {
        Some(t) if EXPECTATIONS.contains(&t.value.as_str()) => Some(t.value),
        Some(t) => {
            r.problems.push(
                Problem::error(
                    Some(t.location(0, t.value.chars().count())),
                    format!("unknown expectation \"{}\"", t.value),
                )
                .hint(format!("one of {}", EXPECTATIONS.join(", "))),
            );
            None
        }
        None => None,
    };
    let message = r.text("message").map(|t| t.value);
    for (key, present) in [
        ("rule", rule.is_some()),
        ("resource_type", type_name.is_some()),
        ("resource", resource.is_some()),
        ("expect", expect.is_some()),
    ] {
        if !present && !r.has(key) {
            r.missing(key, "a case names rule, resource_type, resource and expect");
        }
    }
    let pools = match pools {
        Json::Array(p) => p,
        _ => {
            let loc = r.value_location("pools");
            r.problems.push(Problem::error(
                Some(loc),
                "`pools` must be a list of pool objects",
            ));
            Vec::new()
        }
    };
    let type_name = type_name?;
    Some(Case {
        name,
        rule: rule?,
        subject: Subject::new(
            schemas,
            &type_name,
            &action,
            &resource?,
            &prior,
            Placement::new(schemas, pools, policy),
        ),
        now,
        expect: expect?,
        message,
        location: r.header(),
    })
}

/// Runs the cases against the policy set.
pub fn run(policies: &Evaluator, cases: Vec<Case>) -> Vec<Outcome> {
    cases
        .into_iter()
        .map(|case| {
            let options = Options {
                now: case.now,
                overrides: Default::default(),
                share_placement_values: true,
            };
            let failure_for_rule = if policies
                .policies()
                .rules
                .iter()
                .any(|r| r.name == case.rule)
            {
                None
            } else {
                Some(format!("no rule named \"{}\"", case.rule))
            };
            let (finding, failure_to_run) =
                match policies.evaluate(std::slice::from_ref(&case.subject), &options, 1) {
                    Ok(findings) => (findings.into_iter().find(|f| *f.rule == *case.rule), None),
                    Err(e) => (None, Some(e.to_string())),
                };
            let got = match &finding {
                None => "pass",
                Some(f) if f.evaluation_error.is_some() => "error",
                Some(f) => match f.status {
                    Status::Failed => "fail",
                    Status::Advisory | Status::Overridden => "warn",
                    Status::Waived => "waived",
                },
            }
            .to_string();
            let failure = failure_for_rule.or(failure_to_run).or_else(|| {
                if got != case.expect {
                    let detail = finding
                        .as_ref()
                        .map(|f| {
                            format!(
                                ": {}",
                                f.evaluation_error
                                    .clone()
                                    .unwrap_or_else(|| f.message.to_string())
                            )
                        })
                        .unwrap_or_default();
                    return Some(format!("expected {}, got {got}{detail}", case.expect));
                }
                match (&case.message, &finding) {
                    (Some(want), Some(f)) if !f.message.contains(want.as_str()) => {
                        Some(format!("message {:?} does not contain {want:?}", f.message))
                    }
                    _ => None,
                }
            });
            Outcome { case, got, failure }
        })
        .collect()
}
