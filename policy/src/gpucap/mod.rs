//! What gpucap's resources mean to rules, in one place: the resource types, the variables a rule
//! on each can read, the cost figures, and the placement graph ([`placement`]) that says which
//! pools and burst policy a resource runs on. The rest of the engine is generic over these.

pub mod placement;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::expr::Scope;
use crate::schema::{Scalar, Schemas, Shape};
use placement::{BurstOrder, PolicyPools, Source, resolve};

/// The pool resource type.
pub const POOL: &str = "gpucap_gpu_pool";
/// The burst policy resource type.
pub const BURST_POLICY: &str = "gpucap_burst_policy";
/// The endpoint resource type.
pub const ENDPOINT: &str = "gpucap_inference_endpoint";

/// The fields of `cost`; those that do not apply to a resource type are null.
pub const COST_FIELDS: &[(&str, Scalar)] = &[
    ("hourly_min_usd", Scalar::Number),
    ("hourly_max_usd", Scalar::Number),
    ("price_per_gpu_hour", Scalar::Number),
    ("price_source", Scalar::String),
    ("max_hourly_usd", Scalar::Number),
    ("monthly_min_usd", Scalar::Number),
    ("monthly_max_usd", Scalar::Number),
];

/// The variables of a rule on `type_name` and their shapes.
pub fn scope_for(schemas: &Schemas, type_name: &str) -> Scope {
    let shape = |t: &str| schemas.resource(t).cloned().unwrap_or(Shape::Any);
    let string = Shape::Scalar(Scalar::String);
    let cost = Shape::Object(Arc::new(
        COST_FIELDS
            .iter()
            .map(|(k, s)| (k.to_string(), Shape::Scalar(*s)))
            .collect(),
    ));
    Scope {
        vars: BTreeMap::from([
            ("resource".into(), shape(type_name)),
            ("prior".into(), shape(type_name)),
            ("action".into(), string.clone()),
            ("address".into(), string),
            ("pools".into(), Shape::List(Box::new(shape(POOL)))),
            ("policy".into(), shape(BURST_POLICY)),
            ("cost".into(), cost),
            ("now".into(), Shape::Any),
        ]),
        subject: type_name.to_string(),
    }
}

/// The cost model's figures for a resource, as rules read them in `cost` ([`COST_FIELDS`]), from
/// the cost attributes the provider computed.
pub fn cost_figures(resource: &Json) -> Json {
    let r = resource;
    let get = |k: &str| r.get(k).cloned().unwrap_or(Json::Null);
    json!({
        "hourly_min_usd": get("hourly_cost_min_usd"),
        "hourly_max_usd": get("hourly_cost_max_usd"),
        "price_per_gpu_hour": get("effective_price_per_gpu_hour"),
        "price_source": get("price_source"),
        "max_hourly_usd": get("max_hourly_cost_usd"),
        "monthly_min_usd": get("monthly_cost_min_usd"),
        "monthly_max_usd": get("monthly_cost_max_usd"),
    })
}

/// Names the pools and the burst policy a resource can run on, given lookups by name, through the
/// placement every part of gpucap shares ([`placement`]): base pools, then burst pools in
/// spill order.
pub fn placement_of(
    type_name: &str,
    resource: &Json,
    pool: &dyn Fn(&str) -> Option<Json>,
    policy: &dyn Fn(&str) -> Option<Json>,
) -> (Vec<Json>, Json) {
    let resolved = match type_name {
        ENDPOINT => match resource.get("burst_policy").and_then(Json::as_str) {
            Some(name) => resolve(Source::Policy(name), policy, policy_pools, pool),
            None => {
                let names = names(resource, "pools");
                resolve(Source::Pools(&names), policy, policy_pools, pool)
            }
        },
        BURST_POLICY => {
            let own = resource.clone();
            resolve(
                Source::Policy(""),
                |_| Some(own.clone()),
                policy_pools,
                pool,
            )
        }
        _ => return (Vec::new(), Json::Null),
    };
    let pools = resolved.all().cloned().collect();
    (pools, resolved.policy.unwrap_or(Json::Null))
}

/// The string items of `v[key]`.
fn names(v: &Json, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Json::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The pool names of a burst policy object.
fn policy_pools(p: &Json) -> PolicyPools {
    PolicyPools {
        base: names(p, "base_pools"),
        burst: names(p, "burst_pools"),
        order: BurstOrder::parse(p.get("placement").and_then(Json::as_str)),
    }
}
