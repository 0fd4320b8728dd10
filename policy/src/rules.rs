//! Rule and waiver files: loading `*.hcl` from the policy directories, checking every rule before
//! anything is evaluated, and compiling each expression once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;

use crate::expr::{self, Compiled, Limits};
use crate::gpucap;
use crate::hcl::{self, BlockReader, Text};
use crate::schema::{Schemas, Shape};
use crate::source::{Location, Problem, Severity, SourceFile, did_you_mean};

/// How a violated rule acts on the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Enforcement {
    /// A warning.
    Advisory,
    /// An error unless overridden for the run.
    Soft,
    /// An error; only a waiver lifts it.
    Hard,
}

impl Enforcement {
    /// `advisory`, `soft` or `hard`.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Advisory => "advisory",
            Enforcement::Soft => "soft",
            Enforcement::Hard => "hard",
        }
    }
}

/// The actions a rule applies to unless it says otherwise: deleting is not checked by default.
pub const DEFAULT_ACTIONS: &[&str] = &["create", "update", "replace", "no-op"];
const ACTIONS: &[&str] = &["create", "update", "replace", "delete", "no-op"];

/// A checked, compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Resource types it applies to.
    pub resources: Vec<String>,
    /// What a violation does.
    pub enforcement: Enforcement,
    /// Actions it applies to.
    pub actions: Vec<String>,
    /// Must be true for the rule to apply (absent: always).
    pub when: Option<Compiled>,
    /// Must be true for the resource to pass.
    pub condition: Compiled,
    /// The message of a violation.
    pub message: String,
    /// A CEL expression giving the message, preferred over `message` when it evaluates.
    pub message_expr: Option<Compiled>,
    /// The attribute a finding concerns: stated, else the first the condition reads.
    pub attribute: Vec<String>,
    /// Where the rule is written.
    pub location: Location,
}

impl Rule {
    /// Whether it applies to resources of `type_name` undergoing `action`.
    pub fn applies(&self, type_name: &str, action: &str) -> bool {
        self.resources.iter().any(|t| t == type_name) && self.actions.iter().any(|a| a == action)
    }
}

/// A waiver: lifts a rule's violations for named resources until a date.
#[derive(Debug, Clone)]
pub struct Waiver {
    /// Its name.
    pub name: String,
    /// The rule it lifts.
    pub rule: String,
    /// `TYPE.NAME` addresses or bare names.
    pub resources: Vec<String>,
    /// Why.
    pub reason: String,
    /// The last day it applies; `None` when the date is malformed (it then never applies).
    pub expires: Option<NaiveDate>,
    /// The date as written.
    pub expires_text: String,
    /// Where the waiver is written.
    pub location: Location,
}

impl Waiver {
    /// Whether it covers the resource `type_name.name`.
    pub fn covers(&self, type_name: &str, name: &str) -> bool {
        self.resources.iter().any(|r| {
            r == name
                || r.split_once('.')
                    .is_some_and(|(t, n)| t == type_name && n == name)
        })
    }
}

/// Every rule and waiver of the policy directories: plain data, evaluated by an
/// [`crate::engine::Evaluator`].
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Rules, in file then position order.
    pub rules: Vec<Rule>,
    /// Waivers.
    pub waivers: Vec<Waiver>,
    /// Problems that do not stop the set from being used (e.g. a malformed waiver date).
    pub warnings: Vec<Problem>,
    /// Bounds used when evaluating.
    pub limits: Limits,
}

impl PolicySet {
    /// Problems with the overrides: names that are no rule, or rules that are not soft.
    pub fn check_overrides(&self, overrides: &BTreeSet<String>) -> Vec<Problem> {
        overrides
            .iter()
            .filter_map(|name| match self.rules.iter().find(|r| &r.name == name) {
                None => Some(Problem::warning(
                    None,
                    format!("override names unknown rule \"{name}\"; it has no effect"),
                )),
                Some(r) if r.enforcement != Enforcement::Soft => Some(Problem::warning(
                    Some(r.location.clone()),
                    format!(
                        "override of rule \"{name}\" has no effect: it is {}, and only soft rules can be overridden",
                        r.enforcement.as_str()
                    ),
                )),
                Some(_) => None,
            })
            .collect()
    }

    /// Whether any rule applies to resources of this type.
    pub fn applies_to(&self, type_name: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.resources.iter().any(|t| t == type_name))
    }
}

/// The `*.hcl` files of `paths` (directories, not recursive, or single files), sorted.
pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Problem> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| {
            Problem::error(
                None,
                format!("cannot read policy directory {}: {e}", path.display()),
            )
            .hint("policy paths name directories of *.hcl rule files")
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "hcl"))
            .collect();
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Reads the files of [`policy_files`].
pub fn read_files(paths: &[PathBuf]) -> Result<Vec<SourceFile>, Vec<Problem>> {
    let files = policy_files(paths).map_err(|p| vec![p])?;
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|text| SourceFile {
                    name: f.display().to_string(),
                    text,
                })
                .map_err(|e| {
                    vec![Problem::error(
                        None,
                        format!("cannot read {}: {e}", f.display()),
                    )]
                })
        })
        .collect()
}

/// Loads the policy directories: every problem is reported (errors make the result `Err`).
pub fn load(paths: &[PathBuf], schemas: &Schemas) -> Result<PolicySet, Vec<Problem>> {
    load_sources(read_files(paths)?, schemas, Limits::default())
}

/// Loads rules from file texts. Parsing runs on a large stack.
pub fn load_sources(
    files: Vec<SourceFile>,
    schemas: &Schemas,
    limits: Limits,
) -> Result<PolicySet, Vec<Problem>> {
    expr::on_large_stack(move || Loader::new(schemas, limits).load(files))
        .unwrap_or_else(|e| Err(vec![Problem::error(None, e.to_string())]))
}

struct Loader<'a> {
    schemas: &'a Schemas,
    limits: Limits,
    problems: Vec<Problem>,
}

impl<'a> Loader<'a> {
    fn new(schemas: &'a Schemas, limits: Limits) -> Loader<'a> {
        Loader {
            schemas,
            limits,
            problems: Vec::new(),
        }
    }

    fn load(mut self, files: Vec<SourceFile>) -> Result<PolicySet, Vec<Problem>> {
        let mut set = PolicySet {
            limits: self.limits,
            ..PolicySet::default()
        };
        let mut rule_names: BTreeMap<String, Location> = BTreeMap::new();
        let mut waiver_names: BTreeMap<String, Location> = BTreeMap::new();
        for file in files {
            let file = Arc::new(file);
            let body = match hcl::parse(&file) {
                Ok(b) => b,
                Err(p) => {
                    self.problems.push(p);
                    continue;
                }
            };
            for attr in body.attributes() {
                let span = hcl_edit::Span::span(&attr.key).unwrap_or(0..0);
                self.problems.push(
                    Problem::error(
                        Some(file.location(span.start, span.end)),
                        format!("unexpected attribute `{}` at the top level", attr.key.as_str()),
                    )
                    .hint("policy files hold `rule \"NAME\" { … }` and `waiver \"NAME\" { … }` blocks"),
                );
            }
            for block in body.blocks() {
                let kind = block.ident.as_str();
                let name = match block.labels.as_slice() {
                    [label] => label.as_str().to_string(),
                    _ => {
                        let r = BlockReader::new(&file, block, kind.to_string());
                        self.problems.push(
                            Problem::error(
                                Some(r.header()),
                                format!("a `{kind}` block takes exactly one name"),
                            )
                            .hint(format!("write {kind} \"my_name\" {{ … }}")),
                        );
                        continue;
                    }
                };
                let names = match kind {
                    "rule" => &mut rule_names,
                    "waiver" => &mut waiver_names,
                    other => {
                        let r = BlockReader::new(&file, block, other.to_string());
                        let hint = match did_you_mean(other, ["rule", "waiver"]) {
                            Some(m) => format!("did you mean `{m}`?"),
                            None => "policy files hold `rule` and `waiver` blocks".into(),
                        };
                        self.problems.push(
                            Problem::error(
                                Some(r.header()),
                                format!("unknown block type `{other}`"),
                            )
                            .hint(hint),
                        );
                        continue;
                    }
                };
                let mut reader = BlockReader::new(&file, block, format!("{kind} \"{name}\""));
                if !valid_name(&name) {
                    self.problems.push(
                        Problem::error(
                            Some(reader.header()),
                            format!("invalid {kind} name \"{name}\""),
                        )
                        .hint("names use letters, digits, `_` and `-`, starting with a letter"),
                    );
                }
                if let Some(first) = names.get(&name) {
                    self.problems.push(
                        Problem::error(
                            Some(reader.header()),
                            format!("duplicate {kind} name \"{name}\""),
                        )
                        .hint(format!("the first is at {}", first.short())),
                    );
                } else {
                    names.insert(name.clone(), reader.header());
                }
                if kind == "rule" {
                    if let Some(rule) = self.rule(&mut reader, name) {
                        set.rules.push(rule);
                    }
                } else if let Some(waiver) = self.waiver(&mut reader, name, &mut set.warnings) {
                    set.waivers.push(waiver);
                }
                self.problems.extend(reader.finish());
            }
        }
        for w in &set.waivers {
            if !rule_names.contains_key(&w.rule) {
                let hint = match did_you_mean(&w.rule, rule_names.keys().map(String::as_str)) {
                    Some(m) => format!("did you mean \"{m}\"?"),
                    None => "a waiver names a rule of the policy directories".into(),
                };
                self.problems.push(
                    Problem::error(
                        Some(w.location.clone()),
                        format!("waiver \"{}\" names unknown rule \"{}\"", w.name, w.rule),
                    )
                    .hint(hint),
                );
            }
        }
        let (errors, warnings): (Vec<_>, Vec<_>) = self
            .problems
            .into_iter()
            .partition(|p| p.severity == Severity::Error);
        set.warnings.extend(warnings);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors.into_iter().chain(set.warnings).collect())
        }
    }

    fn rule(&mut self, r: &mut BlockReader<'_>, name: String) -> Option<Rule> {
        let description = r.text("description").map(|t| t.value).unwrap_or_default();
        let resources = match r.strings("resources") {
            Some(list) if !list.is_empty() => list,
            Some(_) => {
                let loc = r.value_location("resources");
                r.problems.push(Problem::error(
                    Some(loc),
                    format!("{} applies to no resource type", r.what),
                ));
                Vec::new()
            }
            None => {
                if !r.has("resources") {
                    r.missing(
                        "resources",
                        "e.g. resources = [\"gpucap_inference_endpoint\"]",
                    );
                }
                Vec::new()
            }
        };
        for (type_name, loc) in &resources {
            if self.schemas.resource(type_name).is_none() && type_name.starts_with("gpucap_") {
                let hint = match did_you_mean(type_name, self.schemas.type_names()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => format!(
                        "gpucap's resource types are {}",
                        self.schemas.type_names().collect::<Vec<_>>().join(", ")
                    ),
                };
                r.problems.push(
                    Problem::error(
                        Some(loc.clone()),
                        format!("unknown resource type `{type_name}`"),
                    )
                    .hint(hint),
                );
            }
        }
        let enforcement = match r.text("enforcement") {
            Some(t) => match t.value.as_str() {
                "advisory" => Some(Enforcement::Advisory),
                "soft" => Some(Enforcement::Soft),
                "hard" => Some(Enforcement::Hard),
                other => {
                    r.problems.push(
                        Problem::error(
                            Some(t.location(0, t.value.chars().count())),
                            format!("invalid enforcement \"{other}\""),
                        )
                        .hint("one of \"advisory\" (a warning), \"soft\" (an error that can be overridden for a run), \"hard\" (an error only a waiver lifts)"),
                    );
                    None
                }
            },
            None => {
                if !r.has("enforcement") {
                    r.missing(
                        "enforcement",
                        "enforcement = \"advisory\", \"soft\" or \"hard\"",
                    );
                }
                None
            }
        };
        let actions = match r.strings("actions") {
            Some(list) => {
                for (a, loc) in &list {
                    if !ACTIONS.contains(&a.as_str()) {
                        r.problems.push(
                            Problem::error(Some(loc.clone()), format!("unknown action \"{a}\""))
                                .hint(format!("actions are {}", ACTIONS.join(", "))),
                        );
                    }
                }
                list.into_iter().map(|(a, _)| a).collect()
            }
            None => DEFAULT_ACTIONS.iter().map(|a| a.to_string()).collect(),
        };
        let types: Vec<String> = resources.iter().map(|(t, _)| t.clone()).collect();
        let when = r.text("when").and_then(|t| self.compile(r, &t, &types));
        let condition = match r.text("condition") {
            Some(t) => self.compile(r, &t, &types),
            None => {
                if !r.has("condition") {
                    r.missing(
                        "condition",
                        "condition = \"<CEL expression that is true when the resource complies>\"",
                    );
                }
                None
            }
        };
        let message_expr = r
            .text("message_expr")
            .and_then(|t| self.compile(r, &t, &types));
        let message = match r.text("message") {
            Some(t) => t.value,
            None if message_expr.is_some() || r.has("message_expr") => String::new(),
            None => {
                if !r.has("message") {
                    r.missing(
                        "message",
                        "message = \"what is wrong\" (or message_expr = \"<CEL string>\")",
                    );
                }
                String::new()
            }
        };
        let attribute = match r.text("attribute") {
            Some(t) => {
                let path: Vec<String> = t.value.split('.').map(str::to_string).collect();
                for type_name in &types {
                    if let Some(problem) = self.check_path(type_name, &path) {
                        r.problems.push(
                            Problem::error(Some(t.location(0, t.value.chars().count())), problem)
                                .hint("attribute is a dotted path such as \"data_residency.classification\""),
                        );
                    }
                }
                path
            }
            None => condition
                .as_ref()
                .and_then(|c| c.resource_paths.first().cloned())
                .unwrap_or_default(),
        };
        let condition = condition?;
        Some(Rule {
            name,
            description,
            resources: types,
            enforcement: enforcement?,
            actions,
            when,
            condition,
            message,
            message_expr,
            attribute,
            location: r.header(),
        })
    }

    fn check_path(&self, type_name: &str, path: &[String]) -> Option<String> {
        let mut shape = self.schemas.resource(type_name)?;
        for (i, seg) in path.iter().enumerate() {
            match shape {
                Shape::Object(fields) => match fields.get(seg) {
                    Some(s) => shape = s,
                    None => {
                        return Some(format!(
                            "`{type_name}` has no attribute `{}`",
                            path[..=i].join(".")
                        ));
                    }
                },
                _ => return None,
            }
        }
        None
    }

    /// Compiles an expression for each resource type the rule names; the first compiled program
    /// is kept (programs hold no type information: the checks are what differ per type).
    fn compile(&self, r: &mut BlockReader<'_>, text: &Text, types: &[String]) -> Option<Compiled> {
        let mut kept = None;
        let mut failed = false;
        for type_name in types {
            match expr::compile(
                &text.value,
                &gpucap::scope_for(self.schemas, type_name),
                &self.limits,
            ) {
                Ok(c) => {
                    if kept.is_none() {
                        kept = Some(c);
                    }
                }
                Err(problems) => {
                    failed = true;
                    for p in problems {
                        let mut problem =
                            Problem::error(Some(text.location(p.start, p.end)), p.message);
                        problem.hint = p.hint;
                        if !r.problems.iter().any(|q| q.message == problem.message) {
                            r.problems.push(problem);
                        }
                    }
                }
            }
        }
        if failed { None } else { kept }
    }

    fn waiver(
        &mut self,
        r: &mut BlockReader<'_>,
        name: String,
        warnings: &mut Vec<Problem>,
    ) -> Option<Waiver> {
        let rule = r.text("rule").map(|t| t.value);
        if rule.is_none() && !r.has("rule") {
            r.missing("rule", "rule = \"<name of the rule it lifts>\"");
        }
        let resources = r.strings("resources").unwrap_or_default();
        if resources.is_empty() {
            r.missing("resources", "resources = [\"gpucap_inference_endpoint.<name>\"] — the resources it covers, as TYPE.NAME or NAME");
        }
        let reason = r.text("reason").map(|t| t.value).unwrap_or_default();
        if reason.trim().is_empty() {
            r.missing(
                "reason",
                "reason = \"why the rule does not apply, and until when\"",
            );
        }
        let (expires, expires_text) = match r.text("expires") {
            Some(t) => match NaiveDate::parse_from_str(&t.value, "%Y-%m-%d") {
                Ok(d) => (Some(d), t.value),
                Err(_) => {
                    warnings.push(
                        Problem::warning(
                            Some(t.location(0, t.value.chars().count())),
                            format!(
                                "{} has a malformed expiry date \"{}\"; it does not apply",
                                r.what, t.value
                            ),
                        )
                        .hint("write the last day it applies as YYYY-MM-DD, e.g. \"2027-03-31\""),
                    );
                    (None, t.value)
                }
            },
            None => {
                r.missing("expires", "expires = \"YYYY-MM-DD\" — every waiver ends");
                (None, String::new())
            }
        };
        Some(Waiver {
            name,
            rule: rule?,
            resources: resources.into_iter().map(|(s, _)| s).collect(),
            reason,
            expires,
            expires_text,
            location: r.header(),
        })
    }
}

fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<PolicySet, Vec<Problem>> {
        let file = SourceFile {
            name: "rules.hcl".into(),
            text: text.into(),
        };
        load_sources(vec![file], Schemas::gpucap(), Limits::default())
    }

    const SOFT: &str = r#"
rule "named" {
  resources   = ["gpucap_inference_endpoint"]
  enforcement = "soft"
  condition   = "resource.name != ''"
  message     = "endpoints are named"
}

rule "hard" {
  resources   = ["gpucap_gpu_pool"]
  enforcement = "hard"
  condition   = "true"
  message     = "always holds"
}
"#;

    #[test]
    fn rules_load_as_data_with_their_types() {
        let set = load(SOFT).unwrap();
        let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["named", "hard"]);
        assert!(set.applies_to("gpucap_inference_endpoint"));
        assert!(!set.applies_to("gpucap_burst_policy"));
        assert_eq!(set.rules[1].enforcement, Enforcement::Hard);
    }

    #[test]
    fn overrides_of_unknown_or_hard_rules_are_warned_about() {
        let set = load(SOFT).unwrap();
        let overrides = ["named", "hard", "nope"].map(String::from).into();
        let warnings: Vec<String> = set
            .check_overrides(&overrides)
            .iter()
            .map(|p| p.message.clone())
            .collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("rule \"hard\" has no effect: it is hard"));
        assert!(warnings[1].contains("unknown rule \"nope\""));
    }

    #[test]
    fn a_misspelt_attribute_is_located_with_a_suggestion() {
        let problems = load(
            "rule \"r\" {\n  resources = [\"gpucap_inference_endpoint\"]\n  enforcement = \"hard\"\n  condition = \"resource.nmae != ''\"\n  message = \"m\"\n}\n",
        )
        .unwrap_err();
        let p = &problems[0];
        assert!(
            p.message.contains("has no attribute `nmae`"),
            "{}",
            p.message
        );
        let location = p.location.as_ref().expect("located");
        assert_eq!(location.line, 4);
        assert!(p.to_string().contains("name"), "did you mean: {p}");
    }
}
