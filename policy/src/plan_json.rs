//! Reading `terraform show -json` plans: the resources a plan creates, updates, replaces, deletes
//! or leaves alone, as [`Subject`]s with their pools and burst policy resolved by name exactly as
//! the provider resolves them at plan time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::engine::{Placement, Subject};
use crate::gpucap::placement_of;
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

/// Reads the resources of a plan. `wanted` says which resource types to keep: the others (other
/// providers' resources no rule names) are skipped.
pub fn subjects(
    text: &str,
    file: &str,
    schemas: &Schemas,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<Subject>, PlanError> {
    let doc: Json = serde_json::from_str(text).map_err(|e| PlanError::Json {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    let shape = |path: &str, reason: &str| PlanError::Shape {
        file: file.to_string(),
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if doc.get("format_version").is_none() {
        return Err(shape(
            "$",
            "not a Terraform plan: no \"format_version\"; write the plan with `terraform show -json PLANFILE`",
        ));
    }
    let changes = match doc.get("resource_changes") {
        None | Some(Json::Null) => return Ok(Vec::new()),
        Some(Json::Array(a)) => a,
        Some(_) => return Err(shape("$.resource_changes", "expected a list")),
    };
    struct Change<'a> {
        address: &'a str,
        type_name: &'a str,
        action: &'static str,
        object: &'a Json,
        prior: &'a Json,
    }
    let mut kept = Vec::new();
    for (i, rc) in changes.iter().enumerate() {
        let at = |k: &str| format!("$.resource_changes[{i}]{k}");
        let str_field = |k: &str| -> Result<&str, PlanError> {
            rc.get(k)
                .and_then(Json::as_str)
                .ok_or_else(|| shape(&at(&format!(".{k}")), "expected a string"))
        };
        if rc.get("mode").and_then(Json::as_str) != Some("managed") {
            continue;
        }
        let type_name = str_field("type")?;
        if !wanted(type_name) {
            continue;
        }
        let address = str_field("address")?;
        let change = rc
            .get("change")
            .filter(|c| c.is_object())
            .ok_or_else(|| shape(&at(".change"), "expected an object"))?;
        let actions: Vec<&str> = change
            .get("actions")
            .and_then(Json::as_array)
            .and_then(|a| a.iter().map(Json::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| shape(&at(".change.actions"), "expected a list of strings"))?;
        let action = match actions.as_slice() {
            ["no-op"] => "no-op",
            ["create"] => "create",
            ["update"] => "update",
            ["delete"] => "delete",
            ["delete", "create"] | ["create", "delete"] => "replace",
            // Reads of data sources and `forget` change nothing rules judge.
            ["read"] | ["forget"] => continue,
            other => {
                return Err(shape(
                    &at(".change.actions"),
                    &format!("unknown actions {other:?}"),
                ));
            }
        };
        let before = change.get("before").unwrap_or(&Json::Null);
        let after = change.get("after").unwrap_or(&Json::Null);
        let object = if action == "delete" { before } else { after };
        if !object.is_object() {
            return Err(shape(
                &at(if action == "delete" {
                    ".change.before"
                } else {
                    ".change.after"
                }),
                "expected an object",
            ));
        }
        kept.push(Change {
            address,
            type_name,
            action,
            object,
            prior: before,
        });
    }
    // Pools and policies by name, as planned (a pool being deleted is not there to run on).
    let by_name = |t: &str| -> BTreeMap<String, Json> {
        kept.iter()
            .filter(|c| c.type_name == t && c.action != "delete")
            .filter_map(|c| {
                let name = c.object.get("name")?.as_str()?.to_string();
                Some((name, c.object.clone()))
            })
            .collect()
    };
    let pools = by_name("gpucap_gpu_pool");
    let policies = by_name("gpucap_burst_policy");
    // Endpoints on the same burst policy share one placement, so its pools are looked up and
    // converted for rules once rather than once per endpoint.
    let mut placements: HashMap<String, Arc<Placement>> = HashMap::new();
    Ok(kept
        .iter()
        .map(|c| {
            let placement = placements
                .entry(placement_key(c.type_name, c.address, c.object))
                .or_insert_with(|| {
                    let (p, policy) =
                        placement_of(c.type_name, c.object, &|n| pools.get(n).cloned(), &|n| {
                            policies.get(n).cloned()
                        });
                    Placement::new(schemas, p, policy)
                })
                .clone();
            let mut s = Subject::new(schemas, c.type_name, c.action, c.object, c.prior, placement);
            s.terraform_address = Some(c.address.to_string());
            if s.name.is_empty() {
                s.name = c
                    .address
                    .rsplit('.')
                    .next()
                    .unwrap_or(c.address)
                    .to_string();
            }
            s
        })
        .collect())
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
        subjects(doc, "plan.json", Schemas::gpucap(), &|_| true)
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
