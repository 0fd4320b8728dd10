//! `gpucap_inference_endpoint`: a served model. Planning resolves its pools (directly or through a
//! burst policy, with the placement every part of gpucap shares), enforces the residency and
//! capacity guarantees, and computes costs; applying deploys the endpoint's router through the
//! fabric, which starts, scales and stops the replicas on those pools.

use std::time::Duration;

use async_trait::async_trait;
use gpucap_fabric::config::{
    BatchingSection, EndpointSection, FabricConfig, ModelSection, ReplicasSection,
    ResidencySection, RuntimeSection, StateSection,
};
use gpucap_fabric::deploy::{self, EndpointDir, RouterHealth};
use gpucap_fabric::store;
use gpucap_policy::gpucap::placement::{self, Missing, Residency, Resolved, Source};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::plan;
use crate::registry::{BurstPolicyInfo, PoolInfo};
use crate::resources::burst_policy::unknown_pool;
use crate::schema::{Block, Check, Mode, Schema, list_of_strings, map_of_strings};
use crate::validate;
use crate::value::{Type, Value};

/// The resource type.
pub struct InferenceEndpoint;

/// Data classifications, least sensitive first.
pub const CLASSIFICATIONS: &[(&str, &str)] = &[
    ("public", ""),
    ("internal", ""),
    ("confidential", ""),
    ("pii", "personal data"),
];

/// The schema, built once per process.
fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

fn build_schema() -> Schema {
    Schema {
        version: 0,
        block: Block::new("A served model: which model, how requests are batched, where it may run and what it may cost. Each endpoint gets one URL, served by its router (`gpucap-fabric`), which starts replicas on the base pools, spills load to burst pools while the base is saturated, and drains them back.")
            .attr("id", Type::String, Mode::Computed, "The endpoint's name.")
            .attr("name", Type::String, Mode::Required, "Unique name; also the model's name in the endpoint's URLs. Changing it replaces the endpoint.")
            .force_new("name")
            .check("name", Check::Name)
            .attr("burst_policy", Type::String, Mode::Optional, "Name of the `gpucap_burst_policy` that places the endpoint. Conflicts with `pools`.")
            .check("burst_policy", Check::Name)
            .attr("pools", list_of_strings(), Mode::Optional, "Names of the pools to run on, without bursting. Conflicts with `burst_policy`.")
            .check("pools", Check::NameList)
            .attr("labels", map_of_strings(), Mode::Optional, "Free-form labels, readable by policy rules (e.g. `latency = \"critical\"`). Changing them touches no replica.")
            .attr("model_sha256", Type::String, Mode::Computed, "SHA-256 of the model file, computed at plan time: a changed file shows as an in-place update, applied by a rolling restart of the replicas.")
            .attr("url", Type::String, Mode::Computed, "Base URL of the model on the Open Inference Protocol v2, served by the endpoint's router, e.g. `http://127.0.0.1:8000/v2/models/NAME`; inference is `POST {url}/infer`.")
            .attr("router_region", Type::String, Mode::Computed, "Where the endpoint's router runs: the first base pool's region. The router sees the endpoint's data, so this region is held to `data_residency` too.")
            .attr("serving_regions", list_of_strings(), Mode::Computed, "Every region the endpoint can run in: its pools' regions, base then burst.")
            .attr("spill_order", list_of_strings(), Mode::Computed, "The endpoint's pools in the order load goes to them: the base pools, then the burst pools in the burst policy's `placement` order. The router follows it, and `gpucap-fabric simulate --plan` reads it.")
            .attr("monthly_cost_min_usd", Type::Number, Mode::Computed, "Cost per month (730 h) of the minimum replicas on the cheapest base pool. Null while a pool has no price.")
            .attr("monthly_cost_max_usd", Type::Number, Mode::Computed, "Cost per month of the maximum replicas on the most expensive allowed pool, capped by the burst budget.")
            .attr("placement_digest", Type::String, Mode::Computed, "Hash of the resolved pools and policy: a change to them shows as an in-place update of the endpoint.")
            .attr("replicas_status", Type::String, Mode::Computed, "Replicas ready by role, as the router reported when last read, e.g. `2 ready: base 1, burst 1`; `router not running (…)` when the router is down, which the next apply repairs.")
            .single(
                "model",
                true,
                Block::new("The model to serve.")
                    .attr("path", Type::String, Mode::Required, "A `.safetensors` file in gpucap's model format (see the runtime docs), relative to the working directory or absolute.")
                    .attr("version", Type::String, Mode::OptionalComputed, "The version reported by the endpoint.")
                    .default_value("version", json!("1")),
            )
            .single(
                "batching",
                false,
                Block::new("Dynamic batching in each replica.")
                    .attr("max_batch_size", Type::Number, Mode::OptionalComputed, "Rows per batch at most; also the requests a replica takes at once before the router counts it saturated.")
                    .check("max_batch_size", Check::IntIn(1, 65_536))
                    .default_value("max_batch_size", json!(64))
                    .attr("max_queue_delay_us", Type::Number, Mode::OptionalComputed, "Microseconds a batch waits to fill.")
                    .check("max_queue_delay_us", Check::IntIn(0, 10_000_000))
                    .default_value("max_queue_delay_us", json!(2000))
                    .attr("queue_capacity", Type::Number, Mode::OptionalComputed, "Requests that may wait in a replica, and in the router while no replica has room; more get 429.")
                    .check("queue_capacity", Check::IntIn(1, 1_000_000))
                    .default_value("queue_capacity", json!(256))
                    .attr("request_timeout_ms", Type::Number, Mode::OptionalComputed, "Milliseconds a request may take, time held at the router included (a scale from zero must finish within it); then 504, or 503 with `Retry-After` when no replica had room.")
                    .check("request_timeout_ms", Check::IntIn(1, 3_600_000))
                    .default_value("request_timeout_ms", json!(10000)),
            )
            .single(
                "replicas",
                false,
                Block::new("How many replicas may run across the endpoint's pools, one per GPU (or an equal share of the CPU).")
                    .attr("min", Type::Number, Mode::OptionalComputed, "Replicas kept on the base pools at all times; 0 scales to zero when idle (the first request is held while a replica starts).")
                    .check("min", Check::IntIn(0, 10_000))
                    .default_value("min", json!(1))
                    .attr("max", Type::Number, Mode::OptionalComputed, "Most replicas, base and burst together; 1 leaves no room to burst.")
                    .check("max", Check::IntIn(1, 10_000))
                    .default_value("max", json!(1)),
            )
            .single(
                "data_residency",
                false,
                Block::new("What data the endpoint handles and where it may be processed. Checked at plan time against every pool the endpoint can ever run on and the router's region, and again by the router at run time.")
                    .attr("classification", Type::String, Mode::OptionalComputed, "How sensitive the data is; policy rules read it.")
                    .check("classification", Check::OneOf(CLASSIFICATIONS))
                    .default_value("classification", json!("internal"))
                    .attr("allowed_jurisdictions", list_of_strings(), Mode::Optional, "Jurisdictions (`EU`, `US`, …) the endpoint's pools must be in.")
                    .attr("allowed_regions", list_of_strings(), Mode::Optional, "Regions the endpoint's pools must be in."),
            )
            .single(
                "listen",
                false,
                Block::new("Where the endpoint's router listens.")
                    .attr("host", Type::String, Mode::OptionalComputed, "Address to bind.")
                    .default_value("host", json!("127.0.0.1"))
                    .attr("port", Type::Number, Mode::OptionalComputed, "Port; 0 picks a free one.")
                    .check("port", Check::IntIn(0, 65_535))
                    .default_value("port", json!(0)),
            ),
    }
}

/// The pools an endpoint runs on, resolved: base pools, then burst pools in spill order.
type Placement = Resolved<PoolInfo, BurstPolicyInfo>;

#[async_trait]
impl Resource for InferenceEndpoint {
    fn type_name(&self) -> &'static str {
        "gpucap_inference_endpoint"
    }

    fn schema(&self) -> &'static Schema {
        schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        let mut d = validate::schema(&schema().block, c);
        validate::min_le_max(&mut d, c, "replicas");
        if let Some(v) = c.get("model").get("version").as_str()
            && !validate::is_valid_name(&v.to_ascii_lowercase())
        {
            d.push(Diagnostic::attr_error(
                "model.version",
                "Invalid model.version",
                format!("{v:?} is not valid; use letters, digits, '-', '_' or '.'"),
            ));
        }
        if let Some(p) = c.get("model").get("path").as_str()
            && p.trim().is_empty()
        {
            d.push(Diagnostic::attr_error(
                "model.path",
                "Empty model.path",
                "name the model's .safetensors file",
            ));
        }
        let (policy, pools) = (c.get("burst_policy"), c.get("pools"));
        if !policy.is_unknown() && !pools.is_unknown() {
            match (policy.is_null(), pools.is_null()) {
                (false, false) => d.push(Diagnostic::attr_error("pools", "Conflicting placement", "set either burst_policy or pools, not both")),
                (true, true) => d.push(Diagnostic::attr_error("pools", "No placement", "set burst_policy (a gpucap_burst_policy's name) or pools (a list of gpucap_gpu_pool names)")),
                _ => {}
            }
        }
        d
    }

    fn plan(&self, ctx: &Ctx, req: PlanRequest) -> Result<Planned, Diagnostics> {
        if req.proposed.is_null() {
            return Ok(Planned {
                state: Value::Null,
                ..Planned::default()
            });
        }
        let block = &schema().block;
        let creating = req.prior.is_null();
        let mut state = plan::start(block, &req.proposed, &req.config, creating);
        if let Some(name) = state.get("name").as_str() {
            state.set("id", Value::String(name.to_string()));
        }
        let mut d = Diagnostics::default();
        plan_model(&mut state, &mut d);
        match resolve_placement(ctx, &state) {
            Some(p) => {
                report_missing(ctx, &state, &p, &mut d);
                check_residency(&state, &p, &mut d);
                check_capacity(ctx, &state, &p, &mut d);
                check_drivers(&p, &mut d);
                warn_no_room_to_burst(&state, &p, &mut d);
                plan_placement(&mut state, &p);
                if !d.has_errors()
                    && let Ok(config) = fabric_config(ctx, &state, &p)
                    && let Err(e) = config.validate("")
                {
                    // The router would refuse this config: say so now, not at apply.
                    d.push(Diagnostic::error(
                        "The endpoint's router config is invalid",
                        e.to_string(),
                    ));
                }
            }
            None => {
                for k in [
                    "serving_regions",
                    "spill_order",
                    "router_region",
                    "monthly_cost_min_usd",
                    "monthly_cost_max_usd",
                    "placement_digest",
                ] {
                    state.set(k, Value::Unknown);
                }
            }
        }
        if d.has_errors() {
            return Err(d);
        }
        if !creating && needs_apply(&req.prior, &state) {
            plan::set_unknown(&mut state, &["replicas_status"]);
            // A router that must (re)start on a port the OS picks gets a new URL.
            if router_restarts(&req.prior, &state)
                && state.get("listen").get("port").as_i64().unwrap_or(0) == 0
            {
                plan::set_unknown(&mut state, &["url"]);
            }
        }
        if !creating
            && let Some(port) = state.get("listen").get("port").as_i64()
            && port != 0
            && let Some(host) = state.get("listen").get("host").as_str()
            && let Some(name) = state.get("name").as_str()
        {
            state.set(
                "url",
                Value::String(model_url(&format!("{host}:{port}"), name)),
            );
        }
        let requires_replace = if creating {
            Vec::new()
        } else {
            plan::requires_replace(block, &req.prior, &state)
        };
        Ok(Planned {
            state,
            requires_replace,
            diagnostics: d,
        })
    }

    async fn apply(&self, ctx: &Ctx, prior: Value, planned: Value) -> Applied {
        let name = planned
            .get("name")
            .as_str()
            .or(prior.get("name").as_str())
            .unwrap_or_default()
            .to_string();
        let dir = EndpointDir::new(&ctx.config.state_dir, &name);
        if planned.is_null() {
            return destroy(ctx, &dir, prior).await;
        }
        let config = match resolve_placement(ctx, &planned)
            .filter(|p| p.missing.is_empty())
            .ok_or_else(|| "the endpoint's pools or burst policy are not known".to_string())
            .and_then(|p| fabric_config(ctx, &planned, &p))
        {
            Ok(c) => c,
            Err(e) => return failed(prior, "Cannot configure the endpoint's router", e),
        };
        let router = match dir.read_record() {
            Ok(r) => r,
            Err(e) => return failed(prior, "Cannot read the endpoint's router record", e),
        };
        let serving = match &router {
            Some(r) => matches!(deploy::health(r).await, RouterHealth::Serving(_)),
            None => false,
        };
        let min_ready = replica_bounds(&planned).0.unwrap_or(1).max(0) as usize;
        let restart = prior.is_null() || !serving || prior.get("listen") != planned.get("listen");
        let outcome = match (&router, restart) {
            (Some(r), false) => deploy::reload(&dir, r, config, min_ready, &ctx.cancel)
                .await
                .map(|()| r.clone())
                .map_err(|e| ("The endpoint's router did not apply the change", e)),
            _ => {
                // A router that still runs (its address changes, or it stopped answering) is
                // stopped with its replicas; a dead one left its replicas running, and the new
                // router adopts them.
                let alive = router.as_ref().is_some_and(|r| r.process.alive());
                if alive && let Err(e) = deploy::stop(&dir, drain_timeout(ctx, &prior)).await {
                    return failed(prior, "Cannot stop the endpoint's router", e);
                }
                deploy::start(
                    &ctx.config.fabric_path,
                    &dir,
                    config,
                    min_ready,
                    &ctx.cancel,
                )
                .await
                .map_err(|e| ("The endpoint's router did not start", e))
            }
        };
        let router = match outcome {
            Ok(r) => r,
            Err((summary, e)) => {
                let detail = format!("{e}\n\nrouter log: {}", dir.log().display());
                if prior.is_null() {
                    // A failed create leaves nothing: deploy::start stopped whatever it started.
                    let _ = dir.remove();
                    return failed(Value::Null, summary, detail);
                }
                let status = if restart {
                    "router not running (start failed)"
                } else {
                    "router not updated (reload failed)"
                };
                return failed(with_status(prior, status), summary, detail);
            }
        };
        let mut state = planned;
        state.set("url", Value::String(model_url(&router.address, &name)));
        let status = match deploy::health(&router).await {
            RouterHealth::Serving(s) => s.summary(),
            other => router_down(&router, &other),
        };
        state.set("replicas_status", Value::String(status));
        if let Some(json) = state.to_json()
            && let Err(e) = store::write_json(&dir.state(), &json)
        {
            return Applied {
                state,
                diagnostics: Diagnostic::error(
                    "Cannot record the endpoint",
                    format!("{}: {e}", dir.state().display()),
                )
                .into(),
            };
        }
        Applied {
            state,
            diagnostics: Diagnostics::default(),
        }
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let name = state.get("name").as_str().unwrap_or_default().to_string();
        let dir = EndpointDir::new(&ctx.config.state_dir, &name);
        let router = dir
            .read_record()
            .map_err(|e| Diagnostic::error("Cannot read the endpoint's router record", e))?;
        let recorded: Option<serde_json::Value> = store::read_json(&dir.state())
            .map_err(|e| Diagnostic::error("Cannot read the endpoint's record", e))?;
        let mut state = state;
        match (&router, recorded) {
            (None, None) => return Ok(Value::Null),
            (None, Some(_)) => state.set(
                "replicas_status",
                Value::String("router not running (not deployed)".into()),
            ),
            (Some(r), _) => {
                let status = match deploy::health(r).await {
                    RouterHealth::Serving(s) => s.summary(),
                    other => router_down(r, &other),
                };
                state.set("replicas_status", Value::String(status));
                state.set("url", Value::String(model_url(&r.address, &name)));
            }
        }
        Ok(state)
    }

    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics> {
        let dir = EndpointDir::new(&ctx.config.state_dir, name);
        let recorded: Option<serde_json::Value> = store::read_json(&dir.state())
            .map_err(|e| Diagnostic::error("Cannot read the endpoint's record", e))?;
        let Some(json) = recorded else {
            return Err(Diagnostic::error(
                "Nothing to import",
                format!(
                    "no gpucap_inference_endpoint named {name:?} is recorded in {}; import takes the endpoint's name",
                    ctx.config.state_dir.display()
                ),
            )
            .into());
        };
        let state = Value::from_json(&json, self.state_type()).map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                "The endpoint's record does not match the schema",
                e,
            ))
        })?;
        self.read(ctx, state).await
    }
}

/// `replicas_status` for a router that is not serving.
fn router_down(router: &deploy::RouterRecord, health: &RouterHealth) -> String {
    match health {
        RouterHealth::Gone => format!("router not running (process {} exited)", router.process.pid),
        _ => format!("router not answering (process {})", router.process.pid),
    }
}

fn failed(state: Value, summary: &str, detail: impl Into<String>) -> Applied {
    Applied {
        state,
        diagnostics: Diagnostic::error(summary, detail).into(),
    }
}

fn with_status(mut state: Value, status: &str) -> Value {
    if !state.is_null() {
        state.set("replicas_status", Value::String(status.into()));
    }
    state
}

async fn destroy(ctx: &Ctx, dir: &EndpointDir, prior: Value) -> Applied {
    if let Err(e) = deploy::stop(dir, drain_timeout(ctx, &prior)).await {
        return failed(prior, "Cannot stop the endpoint", e);
    }
    match dir.remove() {
        Ok(()) => Applied {
            state: Value::Null,
            diagnostics: Diagnostics::default(),
        },
        Err(e) => failed(
            Value::Null,
            "The endpoint stopped, but its files remain",
            format!("{}: {e}", dir.0.display()),
        ),
    }
}

/// The drain timeout of the endpoint's burst policy, or 30 s.
fn drain_timeout(ctx: &Ctx, state: &Value) -> Duration {
    state
        .get("burst_policy")
        .as_str()
        .and_then(|p| ctx.registry.burst_policy(&ctx.config.state_dir, p))
        .map_or(Duration::from_secs(30), |p| p.drain_timeout())
}

/// `replicas.min` and `replicas.max`, with the defaults (1 and 1) when the block is absent.
fn replica_bounds(state: &Value) -> (Option<i64>, Option<i64>) {
    match state.get("replicas") {
        Value::Null => (Some(1), Some(1)),
        r => (r.get("min").as_i64(), r.get("max").as_i64()),
    }
}

fn model_url(address: &str, name: &str) -> String {
    format!("http://{address}/v2/models/{name}")
}

/// Whether applying the plan must touch the router: what it serves or how changed, or it is down.
fn needs_apply(prior: &Value, planned: &Value) -> bool {
    [
        "model",
        "model_sha256",
        "batching",
        "replicas",
        "data_residency",
        "listen",
        "placement_digest",
    ]
    .iter()
    .any(|k| prior.get(k) != planned.get(k))
        || router_restarts(prior, planned)
}

/// Whether the router must (re)start rather than reload: its address changed, or it is down.
fn router_restarts(prior: &Value, planned: &Value) -> bool {
    prior.get("listen") != planned.get("listen")
        || prior
            .get("replicas_status")
            .as_str()
            .is_none_or(|s| s.starts_with("router not"))
}

/// Checks the model file now, so a missing or invalid model fails the plan, and hashes it.
fn plan_model(state: &mut Value, d: &mut Diagnostics) {
    let Some(path) = state.get("model").get("path").as_str().map(str::to_string) else {
        state.set("model_sha256", Value::Unknown);
        return;
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            d.push(Diagnostic::attr_error(
                "model.path",
                "Cannot read the model",
                format!("{path}: {e}"),
            ));
            return;
        }
    };
    if let Err(e) = gpucap_fabric::config::check_model(&bytes) {
        d.push(Diagnostic::attr_error(
            "model.path",
            "Invalid model file",
            format!("{path}: {e}"),
        ));
        return;
    }
    state.set(
        "model_sha256",
        Value::String(hex::encode(Sha256::digest(&bytes))),
    );
}

/// The endpoint's placement; `None` while its burst policy or pools are unknown.
fn resolve_placement(ctx: &Ctx, state: &Value) -> Option<Placement> {
    let dir = &ctx.config.state_dir;
    let pool = |n: &str| ctx.registry.pool(dir, n);
    let policy = |n: &str| ctx.registry.burst_policy(dir, n);
    match state.get("burst_policy") {
        Value::Unknown => None,
        Value::String(name) => Some(placement::resolve(
            Source::Policy(name),
            policy,
            BurstPolicyInfo::pools,
            pool,
        )),
        _ => {
            let names: Vec<String> = match state.get("pools") {
                Value::Null => Vec::new(),
                v => v
                    .as_list()?
                    .iter()
                    .map(|n| n.as_str().map(str::to_string))
                    .collect::<Option<_>>()?,
            };
            Some(placement::resolve(
                Source::Pools(&names),
                policy,
                BurstPolicyInfo::pools,
                pool,
            ))
        }
    }
}

/// Names the placement could not resolve, as errors on the attribute that leads to them.
fn report_missing(ctx: &Ctx, state: &Value, p: &Placement, d: &mut Diagnostics) {
    for m in &p.missing {
        match m {
            Missing::Policy(name) => d.push(Diagnostic::attr_error(
                "burst_policy",
                "Unknown burst policy",
                format!(
                    "no gpucap_burst_policy named {name:?} exists or is planned. Reference the policy's name \
                     attribute, e.g. burst_policy = gpucap_burst_policy.{name}.name, so that Terraform plans it first"
                ),
            )),
            Missing::Pool { path, name } => {
                let attr = if state.get("burst_policy").is_null() {
                    path.as_str()
                } else {
                    "burst_policy"
                };
                d.push(unknown_pool(ctx, attr, name));
            }
        }
    }
}

/// Residency: every pool the endpoint can ever run on lies in its allowed regions and
/// jurisdictions (the router, in the first base pool's region, with them).
fn check_residency(state: &Value, p: &Placement, d: &mut Diagnostics) {
    let residency = residency(state);
    for pool in p.all() {
        let role = match &p.policy {
            Some(policy) if policy.burst_pools.contains(&pool.name) => {
                format!(" (a burst pool of policy {:?})", policy.name)
            }
            Some(policy) => format!(" (a base pool of policy {:?})", policy.name),
            None => String::new(),
        };
        for breach in residency.breaches(pool) {
            let (attr, allowed) = match breach {
                placement::Breach::Jurisdiction => (
                    "data_residency.allowed_jurisdictions",
                    residency.allowed_jurisdictions.clone().unwrap_or_default(),
                ),
                placement::Breach::Region => (
                    "data_residency.allowed_regions",
                    residency.allowed_regions.clone().unwrap_or_default(),
                ),
            };
            let detail = match breach {
                placement::Breach::Jurisdiction => format!(
                    "pool {:?}{role} is in region {:?}, jurisdiction {:?}, but this endpoint's data may only be processed in {}. \
                     Remove the pool from the endpoint's placement or allow its jurisdiction.",
                    pool.name,
                    pool.region,
                    pool.jurisdiction,
                    allowed.join(", ")
                ),
                placement::Breach::Region => format!(
                    "pool {:?}{role} is in region {:?}, but this endpoint may only run in regions {}. \
                     Remove the pool from the endpoint's placement or allow its region.",
                    pool.name,
                    pool.region,
                    allowed.join(", ")
                ),
            };
            d.push(Diagnostic::attr_error(attr, "Residency violation", detail));
        }
    }
}

/// The endpoint's `data_residency` restrictions.
fn residency(state: &Value) -> Residency {
    let r = state.get("data_residency");
    let list = |k: &str| -> Option<Vec<String>> {
        r.get(k).as_list().map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    };
    Residency {
        allowed_jurisdictions: list("allowed_jurisdictions"),
        allowed_regions: list("allowed_regions"),
    }
}

/// Capacity: the minimum replicas of every endpoint on these base pools fit their maximum GPUs.
fn check_capacity(ctx: &Ctx, state: &Value, p: &Placement, d: &mut Diagnostics) {
    let (Some(name), (Some(min), _)) = (state.get("name").as_str(), replica_bounds(state)) else {
        return;
    };
    let names: Vec<String> = p.base.iter().map(|b| b.name.clone()).collect();
    let demand = ctx.registry.put_demand(name, names.clone(), min);
    let capacity: i64 = p.base.iter().map(|b| b.gpus_max).sum();
    if demand > capacity {
        d.push(Diagnostic::attr_error(
            "replicas.min",
            "Not enough capacity",
            format!(
                "endpoints on base pools {} need {demand} replicas at minimum, but those pools have at most {capacity} GPU{} \
                 (one replica per GPU). Lower replicas.min or raise the pools' nodes.max.",
                names.join(", "),
                if capacity == 1 { "" } else { "s" }
            ),
        ));
    }
}

/// Every pool must be reachable by a driver the fabric has.
fn check_drivers(p: &Placement, d: &mut Diagnostics) {
    for pool in p.all().filter(|pool| pool.local_devices.is_none()) {
        d.push(Diagnostic::attr_error(
            if p.policy.is_some() { "burst_policy" } else { "pools" },
            "No driver can deploy to this pool",
            format!(
                "pool {:?} has no local block; this release deploys replicas with the local driver only",
                pool.name
            ),
        ));
    }
}

/// Burst pools that `replicas.max` leaves no room for are a configuration mistake worth a word.
fn warn_no_room_to_burst(state: &Value, p: &Placement, d: &mut Diagnostics) {
    let (_, Some(max)) = replica_bounds(state) else {
        return;
    };
    let base: i64 = p.base.iter().map(|b| b.gpus_max).sum();
    if !p.burst.is_empty() && max <= base {
        d.push(Diagnostic::attr_warning(
            "replicas.max",
            "No room to burst",
            format!(
                "replicas.max = {max} fits on the base pools ({base} GPU(s)), so the burst pools ({}) are never used; \
                 raise replicas.max to let load spill to them",
                p.burst.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
}

/// Regions, costs, the router's region and the placement digest: all known at plan time.
fn plan_placement(state: &mut Value, p: &Placement) {
    let mut regions: Vec<String> = Vec::new();
    for pool in p.all() {
        if !regions.contains(&pool.region) {
            regions.push(pool.region.clone());
        }
    }
    state.set(
        "serving_regions",
        Value::List(regions.into_iter().map(Value::String).collect()),
    );
    state.set(
        "spill_order",
        Value::List(
            p.all()
                .map(|pool| Value::String(pool.name.clone()))
                .collect(),
        ),
    );
    state.set(
        "router_region",
        p.base
            .first()
            .map_or(Value::Null, |b| Value::String(b.region.clone())),
    );
    let digest_input = json!({
        "base": p.base,
        "burst": p.burst,
        "policy": p.policy,
    });
    state.set(
        "placement_digest",
        Value::String(hex::encode(Sha256::digest(
            digest_input.to_string().as_bytes(),
        ))),
    );

    let (min, max) = replica_bounds(state);
    let base: Vec<_> = p.base.iter().map(PoolInfo::cost).collect();
    let all: Vec<_> = p.all().map(PoolInfo::cost).collect();
    let budget = p
        .policy
        .as_ref()
        .and_then(BurstPolicyInfo::budget_max_hourly_usd);
    let (cost_min, cost_max) = match (min, max) {
        (Some(min), Some(max)) => {
            gpucap_policy::cost::endpoint_monthly(min, max, &base, &all, budget)
                .map_or((Value::Null, Value::Null), |(lo, hi)| {
                    (Value::Float(lo), Value::Float(hi))
                })
        }
        _ => (Value::Unknown, Value::Unknown),
    };
    state.set("monthly_cost_min_usd", cost_min);
    state.set("monthly_cost_max_usd", cost_max);
}

/// The router config for a planned endpoint: what it serves, its batching, bounds, residency,
/// policy and pools.
fn fabric_config(ctx: &Ctx, planned: &Value, p: &Placement) -> Result<FabricConfig, String> {
    let model = planned.get("model");
    let path = model
        .get("path")
        .as_str()
        .ok_or("model.path is not known")?;
    let path = std::path::absolute(path).map_err(|e| format!("model.path {path}: {e}"))?;
    let name = planned.get("name").as_str().ok_or("name is not known")?;
    let batching = planned.get("batching");
    let listen = planned.get("listen");
    let int = |v: &Value, dflt: i64| v.as_i64().unwrap_or(dflt);
    // An absent block has the runtime's defaults (which the schema's defaults match).
    let d = BatchingSection::default();
    let setting = |k: &str, default: u64| batching.get(k).as_i64().map_or(default, |v| v as u64);
    let b = BatchingSection {
        max_batch_size: setting("max_batch_size", d.max_batch_size as u64) as usize,
        max_queue_delay_us: setting("max_queue_delay_us", d.max_queue_delay_us),
        queue_capacity: setting("queue_capacity", d.queue_capacity as u64) as usize,
        request_timeout_ms: setting("request_timeout_ms", d.request_timeout_ms),
    };
    let (min, max) = replica_bounds(planned);
    // The placement, resolved here once: pools in spill order with their roles.
    let roles = p
        .base
        .iter()
        .map(|b| (b, false))
        .chain(p.burst.iter().map(|b| (b, true)));
    let pools = roles
        .map(|(pool, burst)| {
            pool.to_section(burst)
                .ok_or_else(|| format!("pool {:?} has no driver the fabric can use", pool.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let residency = residency(planned);
    Ok(FabricConfig {
        endpoint: EndpointSection::new(
            name,
            format!(
                "{}:{}",
                listen.get("host").as_str().unwrap_or("127.0.0.1"),
                int(listen.get("port"), 0)
            ),
        ),
        model: ModelSection {
            path,
            version: model.get("version").as_str().unwrap_or("1").to_string(),
        },
        batching: b,
        replicas: ReplicasSection {
            min: min.unwrap_or(1).max(0) as usize,
            max: max.unwrap_or(1).max(1) as usize,
        },
        residency: ResidencySection {
            allowed_jurisdictions: residency.allowed_jurisdictions,
            allowed_regions: residency.allowed_regions,
        },
        policy: p.policy.as_ref().map(|pol| pol.section.clone()),
        pools,
        runtime: RuntimeSection {
            path: ctx.config.runtime_path.clone(),
        },
        state: StateSection {
            dir: EndpointDir::new(&ctx.config.state_dir, name).0,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use crate::testing::{Harness, digits_model, errors};

    /// A base pool in Frankfurt (one CPU "GPU") and a spot burst pool in Virginia, with policy
    /// `spill` between them: the configuration of the residency and capacity acceptance tests.
    fn frankfurt_and_virginia() -> Harness {
        let h = Harness::new();
        h.plan_create(
            "gpucap_gpu_pool",
            json!({"name": "frankfurt", "region": "eu-central-1", "gpu": {"model": "cpu"},
                   "nodes": {"max": 1}, "local": {}}),
        )
        .expect("frankfurt");
        h.plan_create(
            "gpucap_gpu_pool",
            json!({"name": "virginia", "region": "us-east-1", "capacity_type": "spot",
                   "gpu": {"model": "cpu"}, "nodes": {"max": 4}, "local": {}}),
        )
        .expect("virginia");
        h.plan_create(
            "gpucap_burst_policy",
            json!({"name": "spill", "base_pools": ["frankfurt"], "burst_pools": ["virginia"]}),
        )
        .expect("spill");
        h
    }

    fn endpoint(extra: Json) -> Json {
        let mut e = json!({"name": "fraud", "burst_policy": "spill",
                           "model": {"path": digits_model().display().to_string()}});
        if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
            e.extend(extra.clone());
        }
        e
    }

    #[test]
    fn residency_violations_name_the_pool_region_and_attribute() {
        let h = frankfurt_and_virginia();
        let d = h
            .plan_create(
                "gpucap_inference_endpoint",
                endpoint(json!({"data_residency": {"classification": "pii",
                    "allowed_jurisdictions": ["EU"], "allowed_regions": ["eu-central-1"]}})),
            )
            .expect_err("virginia is outside the EU");
        let text = errors(&d);
        assert!(
            text.contains(r#"pool "virginia" (a burst pool of policy "spill") is in region "us-east-1", jurisdiction "US""#),
            "{text}"
        );
        let paths: Vec<String> =
            d.0.iter()
                .filter_map(|d| d.path.as_ref())
                .map(ToString::to_string)
                .collect();
        assert!(
            paths.iter().any(|p| p.contains("allowed_jurisdictions")),
            "{paths:?}"
        );
        assert!(
            paths.iter().any(|p| p.contains("allowed_regions")),
            "{paths:?}"
        );
        assert!(
            !h.state_dir().join("endpoints/fraud").exists(),
            "nothing may exist after a failed plan"
        );
    }

    #[test]
    fn the_base_pools_must_hold_the_minimum_replicas() {
        let h = frankfurt_and_virginia();
        let d = h
            .plan_create(
                "gpucap_inference_endpoint",
                endpoint(json!({"replicas": {"min": 2, "max": 2},
                    "data_residency": {"allowed_jurisdictions": ["EU", "US"]}})),
            )
            .expect_err("one GPU cannot hold two replicas");
        let text = errors(&d);
        assert!(text.contains("Not enough capacity"), "{text}");
        assert!(text.contains("need 2 replicas at minimum"), "{text}");
    }

    #[test]
    fn an_allowed_placement_plans_its_spill_order() {
        let h = frankfurt_and_virginia();
        let planned = h
            .plan_create(
                "gpucap_inference_endpoint",
                endpoint(json!({"data_residency": {"allowed_jurisdictions": ["EU", "US"]}})),
            )
            .expect("plan");
        let s = &planned.state;
        let order: Vec<&str> = s
            .get("spill_order")
            .as_list()
            .expect("spill order known at plan")
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        assert_eq!(order, ["frankfurt", "virginia"]);
        assert!(s.get("url").is_unknown(), "the URL is decided by apply");
        assert!(s.get("placement_digest").as_str().is_some());
    }
}
