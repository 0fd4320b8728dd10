//! Reading `terraform show -json` plans: the resources a plan creates, updates, replaces, deletes
//! or leaves alone, as [`Subject`]s with their pools and burst policy resolved by name exactly as
//! the provider resolves them at plan time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value as Json;
use serde_json::value::RawValue;

use crate::engine::{Evaluator, Finding, Options, Placement, Subject};
use crate::expr::{self, StackError};
use crate::gpucap::{self, placement_of};
use crate::parallel;
use crate::schema::Schemas;

/// Why a plan cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// Not JSON, or truncated.
    #[error("{file}:{line}:{column}: invalid JSON: {reason}")]
    Json {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser says.
        reason: String,
    },
    /// JSON, but not a plan in the shape Terraform writes.
    #[error("{file}: {path}: {reason}")]
    Shape {
        /// The file.
        file: String,
        /// The JSON path of the unexpected value.
        path: String,
        /// What was expected.
        reason: String,
    },
}

/// The parts of a plan a review reads. Everything else (`planned_values`, `configuration`,
/// `prior_state`, …) is skipped by the parser without being built.
#[derive(Deserialize)]
struct Envelope<'a> {
    format_version: Option<IgnoredAny>,
    #[serde(borrow)]
    resource_changes: Option<&'a RawValue>,
}

/// One entry of `resource_changes`, its `change` still unparsed until its type is wanted.
#[derive(Deserialize)]
struct RawChange<'a> {
    #[serde(borrow)]
    mode: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    type_name: Option<&'a RawValue>,
    #[serde(borrow)]
    address: Option<&'a RawValue>,
    #[serde(borrow)]
    change: Option<&'a RawValue>,
}

/// What a review needs of a `change`: the rest (`after_unknown`, the sensitivity masks, …) is
/// skipped.
#[derive(Deserialize)]
struct ChangeBody {
    actions: Option<Json>,
    #[serde(default)]
    before: Json,
    #[serde(default)]
    after: Json,
}

/// A resource change as rules judge it, its object and prior normalized to its type's shape.
#[derive(Clone)]
struct Change {
    address: String,
    type_name: String,
    action: &'static str,
    object: Json,
    prior: Json,
}

/// An entry of `resource_changes` that rules judge: its type and address read, its `change`
/// parsed only for pools and burst policies (which other resources' placements need), the rest
/// left as text until its resource is judged.
struct Entry<'a> {
    index: usize,
    body: Body<'a>,
}

/// An entry's `change`: parsed (`None`: a read or `forget`, which rules do not judge), its place
/// in the text, or why the entry cannot be read (reported when its turn comes, so that the
/// first error in the plan is the one reported).
enum Body<'a> {
    Parsed(Option<Change>),
    Failed(PlanError),
    Raw {
        type_name: String,
        address: String,
        change: &'a RawValue,
    },
}

/// A plan indexed for review: every change found and checked up to its `change` object, and the
/// pools and burst policies that placements are resolved against. Its resources are then built
/// one at a time ([`Plan::subjects`], [`Plan::review`]), so a review never holds every object.
pub struct Plan<'a> {
    reader: Reader<'a>,
    entries: Vec<Entry<'a>>,
    pools: BTreeMap<String, Json>,
    policies: BTreeMap<String, Json>,
    /// Placements by [`placement_key`], shared by the resources placed alike whichever thread
    /// builds them: their pools are converted for rules once.
    placements: Mutex<HashMap<String, Arc<Placement>>>,
}

/// Why a review of a plan stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReviewError {
    /// The plan cannot be read.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The rules could not be evaluated.
    #[error(transparent)]
    Engine(#[from] StackError),
}

/// Reads the resources of a plan, on up to `threads` threads. `wanted` says which resource types
/// to keep: the others (other providers' resources no rule names) are skipped. The result and
/// any error are the same whatever the number of threads.
pub fn subjects(
    text: &[u8],
    file: &str,
    schemas: &Schemas,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    threads: usize,
) -> Result<Vec<Subject>, PlanError> {
    read(text, file, schemas, wanted, threads)?.subjects(threads)
}

/// Indexes a plan on up to `threads` threads: the whole document is checked, every entry of
/// `resource_changes` located and its type, mode and address read, and the pools and burst
/// policies parsed. Fails only when the document is not JSON or not a plan: an entry that cannot
/// be read fails [`Plan::subjects`] or [`Plan::review`] when its turn comes, so that they report
/// the first error in the plan, whatever the threads.
pub fn read<'a>(
    text: &'a [u8],
    file: &'a str,
    schemas: &'a Schemas,
    wanted: &'a (dyn Fn(&str) -> bool + Sync),
    threads: usize,
) -> Result<Plan<'a>, PlanError> {
    let reader = Reader {
        text,
        file,
        schemas,
        wanted,
    };
    // One pass checks the whole document and finds the changes without building them.
    let doc: Envelope = serde_json::from_slice(text).map_err(|e| reader.json_error(0, e))?;
    if doc.format_version.is_none() {
        return Err(reader.shape(
            "$",
            "not a Terraform plan: no \"format_version\"; write the plan with `terraform show -json PLANFILE`",
        ));
    }
    let raw: Vec<&RawValue> = match doc.resource_changes {
        None => Vec::new(),
        Some(r) if r.get() == "null" => Vec::new(),
        Some(r) => serde_json::from_str(r.get())
            .map_err(|_| reader.shape("$.resource_changes", "expected a list"))?,
    };
    let indexed: Vec<(usize, &RawValue)> = raw.into_iter().enumerate().collect();
    let entries: Vec<Entry> = parallel::map(&indexed, threads, |&(index, rc)| {
        reader.entry(index, rc).unwrap_or_else(|e| {
            Some(Entry {
                index,
                body: Body::Failed(e),
            })
        })
    })
    .into_iter()
    .flatten()
    .collect();
    // Pools and policies by name, as planned (a pool being deleted is not there to run on).
    let by_name = |t: &str| -> BTreeMap<String, Json> {
        entries
            .iter()
            .filter_map(|e| match &e.body {
                Body::Parsed(Some(c)) if c.type_name == t && c.action != "delete" => Some((
                    c.object.get("name")?.as_str()?.to_string(),
                    c.object.clone(),
                )),
                _ => None,
            })
            .collect()
    };
    Ok(Plan {
        pools: by_name(gpucap::POOL),
        policies: by_name(gpucap::BURST_POLICY),
        reader,
        entries,
        placements: Mutex::default(),
    })
}

impl Plan<'_> {
    /// Every resource rules judge, in plan order, built on up to `threads` threads. Fails on the
    /// first entry in the plan that cannot be read.
    pub fn subjects(&self, threads: usize) -> Result<Vec<Subject>, PlanError> {
        let mut subjects = Vec::with_capacity(self.entries.len());
        for subject in parallel::map(&self.entries, threads, |e| self.subject(e)) {
            subjects.extend(subject?);
        }
        Ok(subjects)
    }

    /// Judges every resource by `evaluator` as it is built, on up to `threads` threads with the
    /// large stacks evaluation needs: the resources (without their objects, which are dropped
    /// once judged: reports need only their names) in plan order, and the findings in that
    /// order, then rule order, as [`Evaluator::evaluate`] gives them, in one part per thread
    /// ([`crate::report::Review::findings`]). Fails on the first entry in the plan that cannot
    /// be read.
    pub fn review(
        &self,
        evaluator: &Evaluator,
        options: &Options,
        threads: usize,
    ) -> Result<(Vec<Subject>, Vec<Vec<Finding>>), ReviewError> {
        let parts = expr::in_parts_on_large_stacks(&self.entries, threads, |part| {
            let mut judge = evaluator.judge(options, part.len());
            let mut judged = Vec::with_capacity(part.len());
            for entry in part {
                if let Some(subject) = self.subject(entry)? {
                    judge.subject(&subject);
                    judged.push(subject.without_objects());
                }
            }
            Ok::<_, PlanError>((judged, judge.into_findings()))
        })?;
        let mut subjects = Vec::with_capacity(self.entries.len());
        let mut findings = Vec::with_capacity(parts.len());
        for part in parts {
            let (judged, found) = part?;
            subjects.extend(judged);
            findings.push(found);
        }
        Ok((subjects, findings))
    }

    /// The resource of one entry, its placement resolved: `None` for a read or a `forget`.
    fn subject(&self, entry: &Entry) -> Result<Option<Subject>, PlanError> {
        let change = match &entry.body {
            Body::Parsed(Some(c)) => c.clone(),
            Body::Parsed(None) => return Ok(None),
            Body::Failed(e) => return Err(e.clone()),
            Body::Raw {
                type_name,
                address,
                change,
            } => {
                let Some(c) = self
                    .reader
                    .change(entry.index, type_name, address, change)?
                else {
                    return Ok(None);
                };
                c
            }
        };
        let placement = self.placement(&change);
        let mut s = Subject::normalized(
            &change.type_name,
            change.action,
            change.object,
            change.prior,
            placement,
        );
        if s.name.is_empty() {
            s.name = change
                .address
                .rsplit('.')
                .next()
                .unwrap_or(&change.address)
                .to_string();
        }
        s.terraform_address = Some(change.address);
        Ok(Some(s))
    }

    /// The placement of `change`: shared with every resource placed alike.
    fn placement(&self, change: &Change) -> Arc<Placement> {
        let key = placement_key(&change.type_name, &change.address, &change.object);
        // A panic while holding the lock leaves the map as it was: still usable.
        let lock = || {
            self.placements
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(placement) = lock().get(&key) {
            return Arc::clone(placement);
        }
        // Built without the lock; two threads may both build a new placement, and the first
        // one kept is the one every resource shares.
        let (pools, policy) = placement_of(
            &change.type_name,
            &change.object,
            &|n| self.pools.get(n).cloned(),
            &|n| self.policies.get(n).cloned(),
        );
        let placement = Placement::new(self.reader.schemas, pools, policy);
        Arc::clone(lock().entry(key).or_insert(placement))
    }
}

/// What reading one plan shares: its text (errors are located in it) and what to keep.
struct Reader<'a> {
    text: &'a [u8],
    file: &'a str,
    schemas: &'a Schemas,
    wanted: &'a (dyn Fn(&str) -> bool + Sync),
}

impl Reader<'_> {
    /// JSON, but not in the shape Terraform writes, at the JSON `path`.
    fn shape(&self, path: &str, reason: &str) -> PlanError {
        PlanError::Shape {
            file: self.file.to_string(),
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A parser's error in the part of the text that starts at `offset`, located in the whole.
    fn json_error(&self, offset: usize, e: serde_json::Error) -> PlanError {
        let before = &self.text[..offset.min(self.text.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let lines_before = before.iter().filter(|&&b| b == b'\n').count();
        let column = if e.line() == 1 {
            offset - line_start + e.column()
        } else {
            e.column()
        };
        PlanError::Json {
            file: self.file.to_string(),
            line: lines_before + e.line(),
            column,
            reason: e.to_string(),
        }
    }

    /// Where `part`, borrowed from the text by the first pass, starts in it.
    fn offset_of(&self, part: &str) -> usize {
        (part.as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize)
    }

    /// Reads entry `i` of `resource_changes` up to its `change`, which is parsed for pools and
    /// burst policies only: `None` when rules do not judge it (another mode, an unwanted type).
    fn entry<'t>(&self, i: usize, rc: &'t RawValue) -> Result<Option<Entry<'t>>, PlanError> {
        let at = |k: &str| format!("$.resource_changes[{i}]{k}");
        // Entries that are not objects have no mode, so none is a managed resource.
        if !rc.get().starts_with('{') {
            return Ok(None);
        }
        let rc: RawChange = serde_json::from_str(rc.get())
            .map_err(|_| self.shape(&at(""), "expected an object"))?;
        let string =
            |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str::<String>(v.get()).ok());
        if string(rc.mode).as_deref() != Some("managed") {
            return Ok(None);
        }
        let type_name =
            string(rc.type_name).ok_or_else(|| self.shape(&at(".type"), "expected a string"))?;
        if !(self.wanted)(&type_name) {
            return Ok(None);
        }
        let address =
            string(rc.address).ok_or_else(|| self.shape(&at(".address"), "expected a string"))?;
        let change = rc
            .change
            .filter(|c| c.get().starts_with('{'))
            .ok_or_else(|| self.shape(&at(".change"), "expected an object"))?;
        let body = if type_name == gpucap::POOL || type_name == gpucap::BURST_POLICY {
            match self.change(i, &type_name, &address, change) {
                Ok(parsed) => Body::Parsed(parsed),
                Err(e) => Body::Failed(e),
            }
        } else {
            Body::Raw {
                type_name,
                address,
                change,
            }
        };
        Ok(Some(Entry { index: i, body }))
    }

    /// Parses the `change` of entry `i`: `None` for a read or a `forget`, which change nothing
    /// rules judge.
    fn change(
        &self,
        i: usize,
        type_name: &str,
        address: &str,
        change: &RawValue,
    ) -> Result<Option<Change>, PlanError> {
        let at = |k: &str| format!("$.resource_changes[{i}]{k}");
        let change: ChangeBody = serde_json::from_str(change.get()).map_err(|e| {
            if e.is_data() {
                self.shape(&at(".change"), &e.to_string())
            } else {
                // Valid JSON the first pass skipped can still nest deeper than a parser may
                // recurse.
                self.json_error(self.offset_of(change.get()), e)
            }
        })?;
        let actions: Vec<&str> = change
            .actions
            .as_ref()
            .and_then(Json::as_array)
            .and_then(|a| a.iter().map(Json::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.shape(&at(".change.actions"), "expected a list of strings"))?;
        let action = match actions.as_slice() {
            ["no-op"] => "no-op",
            ["create"] => "create",
            ["update"] => "update",
            ["delete"] => "delete",
            ["delete", "create"] | ["create", "delete"] => "replace",
            // Reads of data sources and `forget` change nothing rules judge.
            ["read"] | ["forget"] => return Ok(None),
            other => {
                return Err(self.shape(
                    &at(".change.actions"),
                    &format!("unknown actions {other:?}"),
                ));
            }
        };
        let ChangeBody { before, after, .. } = change;
        let (object, path) = if action == "delete" {
            (before.clone(), ".change.before")
        } else {
            (after, ".change.after")
        };
        if !object.is_object() {
            return Err(self.shape(&at(path), "expected an object"));
        }
        Ok(Some(Change {
            object: self.schemas.normalize_owned(type_name, object),
            prior: self.schemas.normalize_owned(type_name, before),
            address: address.to_string(),
            type_name: type_name.to_string(),
            action,
        }))
    }
}

/// What a resource's placement depends on: resources with the same key have the same placement.
/// An endpoint's comes from its `burst_policy`, or its `pools` when it has none; a burst policy's
/// from itself; other resources have none.
fn placement_key(type_name: &str, address: &str, object: &Json) -> String {
    match type_name {
        "gpucap_inference_endpoint" => {
            let field = |k: &str| object.get(k).unwrap_or(&Json::Null).to_string();
            format!("endpoint {} {}", field("burst_policy"), field("pools"))
        }
        "gpucap_burst_policy" => format!("policy {address}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(doc: &str) -> Result<Vec<Subject>, PlanError> {
        subjects(doc.as_bytes(), "plan.json", Schemas::gpucap(), &|_| true, 2)
    }

    #[test]
    fn malformed_and_truncated_plans_are_located() {
        let e = read("{\"format_version\": \"1.2\", \"resource_changes\": [").unwrap_err();
        assert!(e.to_string().starts_with("plan.json:1:"), "{e}");
        let e = read("{}").unwrap_err();
        assert!(e.to_string().contains("not a Terraform plan"), "{e}");
        let e = read(r#"{"format_version":"1.2","resource_changes":[{"mode":"managed","type":"t","address":"t.a","change":{"actions":"create"}}]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plan.json: $.resource_changes[0].change.actions: expected a list of strings"
        );
    }

    /// A plan of two pools, a burst policy and `n` endpoints on the policy or the pools, some
    /// handling PII, with the `actions` of the `broken` entries (by index) not a list.
    fn fleet(n: usize, broken: &[usize]) -> String {
        let mut changes = vec![
            json!({"address": "gpucap_gpu_pool.eu", "mode": "managed", "type": "gpucap_gpu_pool",
                "change": {"actions": ["create"], "before": null,
                    "after": {"name": "eu", "region": "eu-central-1", "jurisdiction": "EU",
                        "tenancy": "dedicated"}}}),
            json!({"address": "gpucap_gpu_pool.us", "mode": "managed", "type": "gpucap_gpu_pool",
                "change": {"actions": ["create"], "before": null,
                    "after": {"name": "us", "region": "us-east-1", "jurisdiction": "US",
                        "tenancy": "shared"}}}),
            json!({"address": "gpucap_burst_policy.p", "mode": "managed", "type": "gpucap_burst_policy",
                "change": {"actions": ["create"], "before": null,
                    "after": {"name": "p", "base_pools": ["eu"], "burst_pools": ["us"]}}}),
        ];
        for i in 0..n {
            let class = ["pii", "public", "confidential"][i % 3];
            let mut after =
                json!({"name": format!("e{i}"), "data_residency": {"classification": class}});
            // Some on the burst policy, the others straight on a pool.
            match i % 3 {
                0 => after["burst_policy"] = json!("p"),
                1 => after["pools"] = json!(["eu"]),
                _ => after["pools"] = json!(["us"]),
            }
            changes.push(json!({"address": format!("gpucap_inference_endpoint.e{i}"),
                "mode": "managed", "type": "gpucap_inference_endpoint",
                "change": {"actions": ["create"], "before": null, "after": after}}));
        }
        for &i in broken {
            changes[i]["change"]["actions"] = json!("create");
        }
        json!({"format_version": "1.2", "resource_changes": changes}).to_string()
    }

    fn starter_pack() -> Evaluator {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../modules/policy-pack/policies");
        Evaluator::new(crate::rules::load(&[dir], Schemas::gpucap()).unwrap())
    }

    fn options() -> Options {
        let mut options = Options::from_env(Vec::new());
        options.now = "2026-11-30T00:00:00Z".parse().unwrap();
        options
    }

    #[test]
    fn a_review_judges_as_reading_then_evaluating_does() {
        let text = fleet(300, &[]);
        let e = starter_pack();
        let read = |threads| {
            super::read(
                text.as_bytes(),
                "plan.json",
                Schemas::gpucap(),
                &|_| true,
                threads,
            )
            .unwrap()
        };
        let subjects = read(1).subjects(1).unwrap();
        let want = e.evaluate(&subjects, &options(), 1).unwrap();
        assert!(want.len() > 100, "{} findings", want.len());
        for threads in [1, 2, 3, 8] {
            let (judged, findings) = read(threads).review(&e, &options(), threads).unwrap();
            assert_eq!(findings.concat(), want, "{threads} threads");
            let names = |s: &[Subject]| -> Vec<(String, String, Option<String>)> {
                s.iter()
                    .map(|s| (s.address(), s.action.clone(), s.terraform_address.clone()))
                    .collect()
            };
            assert_eq!(names(&judged), names(&subjects));
            assert!(
                judged
                    .iter()
                    .all(|s| s.resource.is_null() && s.prior.is_null())
            );
        }
    }

    #[test]
    fn the_first_broken_entry_in_the_plan_is_reported() {
        let e = starter_pack();
        // An endpoint (parsed late) before a pool (parsed while indexing) and another endpoint.
        let mut doc: Json = serde_json::from_str(&fleet(50, &[40, 50])).unwrap();
        let pool = doc["resource_changes"][1].take();
        doc["resource_changes"][45] = pool;
        doc["resource_changes"][45]["change"]["actions"] = json!("create");
        let text = doc.to_string();
        for threads in [1, 2, 3, 8] {
            let plan = super::read(
                text.as_bytes(),
                "plan.json",
                Schemas::gpucap(),
                &|_| true,
                threads,
            )
            .unwrap();
            let want =
                "plan.json: $.resource_changes[40].change.actions: expected a list of strings";
            let err = plan.subjects(threads).unwrap_err();
            assert_eq!(err.to_string(), want, "{threads} threads");
            let err = plan.review(&e, &options(), threads).unwrap_err();
            assert_eq!(err.to_string(), want, "{threads} threads");
        }
    }

    #[test]
    fn endpoints_get_their_policy_and_pools_by_name() {
        let doc = json!({
            "format_version": "1.2",
            "resource_changes": [
                {"address": "gpucap_gpu_pool.a", "mode": "managed", "type": "gpucap_gpu_pool",
                 "change": {"actions": ["create"], "before": null, "after": {"name": "eu", "region": "eu-central-1"}}},
                {"address": "gpucap_burst_policy.p", "mode": "managed", "type": "gpucap_burst_policy",
                 "change": {"actions": ["no-op"], "before": {"name": "pol", "base_pools": ["eu"]}, "after": {"name": "pol", "base_pools": ["eu"]}}},
                {"address": "module.m.gpucap_inference_endpoint.e", "mode": "managed", "type": "gpucap_inference_endpoint",
                 "change": {"actions": ["delete", "create"], "before": {"name": "old"}, "after": {"name": "fraud", "burst_policy": "pol"}}},
                {"address": "data.x.y", "mode": "data", "type": "x", "change": {"actions": ["read"]}},
                {"address": "aws_instance.web", "mode": "managed", "type": "aws_instance",
                 "change": {"actions": ["create"], "before": null, "after": {"ami": "a"}}}
            ]
        });
        let s = read(&doc.to_string()).unwrap();
        assert_eq!(s.len(), 4);
        let e = &s[2];
        assert_eq!(e.action, "replace");
        assert_eq!(e.address(), "gpucap_inference_endpoint.fraud");
        assert_eq!(
            e.terraform_address.as_deref(),
            Some("module.m.gpucap_inference_endpoint.e")
        );
        assert_eq!(e.placement.pools.len(), 1);
        assert_eq!(e.placement.pools[0]["region"], "eu-central-1");
        assert_eq!(e.placement.pools[0]["jurisdiction"], Json::Null);
        assert_eq!(e.placement.policy["name"], "pol");
        assert_eq!(e.prior["name"], "old");
        assert_eq!(s[3].address(), "aws_instance.web");
    }
}
