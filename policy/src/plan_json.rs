//! Reading `terraform show -json` plans: the resources a plan creates, updates, replaces, deletes
//! or leaves alone, as [`Subject`]s with their pools and burst policy resolved by name exactly as
//! the provider resolves them at plan time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value as Json;
use serde_json::value::RawValue;

use crate::engine::{Placement, Subject};
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
struct Change {
    address: String,
    type_name: String,
    action: &'static str,
    object: Json,
    prior: Json,
    placement_key: String,
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
        None => return Ok(Vec::new()),
        Some(r) if r.get() == "null" => return Ok(Vec::new()),
        Some(r) => serde_json::from_str(r.get())
            .map_err(|_| reader.shape("$.resource_changes", "expected a list"))?,
    };
    let indexed: Vec<(usize, &RawValue)> = raw.into_iter().enumerate().collect();
    let mut kept = Vec::new();
    for change in parallel::map(&indexed, threads, |&(i, rc)| reader.change(i, rc)) {
        kept.extend(change?);
    }
    // Pools and policies by name, as planned (a pool being deleted is not there to run on).
    let by_name = |t: &str| -> BTreeMap<&str, &Json> {
        kept.iter()
            .filter(|c| c.type_name == t && c.action != "delete")
            .filter_map(|c| Some((c.object.get("name")?.as_str()?, &c.object)))
            .collect()
    };
    let pools = by_name(gpucap::POOL);
    let policies = by_name(gpucap::BURST_POLICY);
    // Endpoints on the same burst policy share one placement, so its pools are looked up and
    // converted for rules once rather than once per endpoint.
    let mut by_key: HashMap<&str, Arc<Placement>> = HashMap::new();
    let placements: Vec<Arc<Placement>> = kept
        .iter()
        .map(|c| {
            let placement = by_key.entry(c.placement_key.as_str()).or_insert_with(|| {
                let (p, policy) = placement_of(
                    &c.type_name,
                    &c.object,
                    &|n| pools.get(n).map(|&p| p.clone()),
                    &|n| policies.get(n).map(|&p| p.clone()),
                );
                Placement::new(schemas, p, policy)
            });
            Arc::clone(placement)
        })
        .collect();
    Ok(kept
        .into_iter()
        .zip(placements)
        .map(|(c, placement)| {
            let mut s = Subject::normalized(&c.type_name, c.action, c.object, c.prior, placement);
            if s.name.is_empty() {
                s.name = c
                    .address
                    .rsplit('.')
                    .next()
                    .unwrap_or(&c.address)
                    .to_string();
            }
            s.terraform_address = Some(c.address);
            s
        })
        .collect())
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

    /// Reads entry `i` of `resource_changes`: `None` when rules do not judge it (another mode,
    /// an unwanted type, a read).
    fn change(&self, i: usize, rc: &RawValue) -> Result<Option<Change>, PlanError> {
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
        let object = self.schemas.normalize_owned(&type_name, object);
        let prior = self.schemas.normalize_owned(&type_name, before);
        Ok(Some(Change {
            placement_key: placement_key(&type_name, &address, &object),
            address,
            type_name,
            action,
            object,
            prior,
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
