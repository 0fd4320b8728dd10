//! `gpucap_inference_endpoint`: a served model. Planning resolves its pools (directly or through a
//! burst policy), enforces the residency and capacity guarantees, and computes costs; applying
//! deploys the runtime through the pool's driver.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::diag::{Diagnostic, Diagnostics};
use crate::driver::local::{self, EndpointDir, Health};
use crate::plan;
use crate::provider::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::registry::{PolicyInfo, PoolInfo};
use crate::resources::burst_policy::{resolve_pools, unknown_pool};
use crate::schema::{Block, Mode, Schema, list_of_strings, map_of_strings};
use crate::store;
use crate::validate;
use crate::value::{Type, Value};

/// The resource type.
pub struct InferenceEndpoint;

/// Data classifications, least sensitive first.
pub const CLASSIFICATIONS: &[&str] = &["public", "internal", "confidential", "pii"];

/// The schema, built once per process.
fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

fn build_schema() -> Schema {
    Schema {
        version: 0,
        block: Block::new("A served model: which model, how requests are batched, where it may run and what it may cost.")
            .attr("id", Type::String, Mode::Computed, "The endpoint's name.")
            .attr("name", Type::String, Mode::Required, "Unique name; also the model's name in the endpoint's URLs. Changing it replaces the endpoint.")
            .force_new("name")
            .attr("burst_policy", Type::String, Mode::Optional, "Name of the `gpucap_burst_policy` that places the endpoint. Conflicts with `pools`.")
            .attr("pools", list_of_strings(), Mode::Optional, "Names of the pools to run on, without bursting. Conflicts with `burst_policy`.")
            .attr("labels", map_of_strings(), Mode::Optional, "Free-form labels, readable by policy rules (e.g. `latency = \"critical\"`). Changing them does not restart the runtime.")
            .attr("model_sha256", Type::String, Mode::Computed, "SHA-256 of the model file, computed at plan time: a changed file shows as an in-place update.")
            .attr("url", Type::String, Mode::Computed, "Base URL of the model on the Open Inference Protocol v2, e.g. `http://127.0.0.1:8000/v2/models/NAME`; inference is `POST {url}/infer`.")
            .attr("serving_regions", list_of_strings(), Mode::Computed, "Every region the endpoint can run in: its pools' regions, base then burst.")
            .attr("monthly_cost_min_usd", Type::Number, Mode::Computed, "Cost per month (730 h) of the minimum replicas on the cheapest base pool. Null while a pool has no price.")
            .attr("monthly_cost_max_usd", Type::Number, Mode::Computed, "Cost per month of the maximum replicas on the most expensive allowed pool, capped by the burst budget.")
            .attr("placement_digest", Type::String, Mode::Computed, "Hash of the resolved pools and policy: a change to them shows as an in-place update of the endpoint.")
            .attr("replicas_status", Type::String, Mode::Computed, "Replicas ready out of deployed, e.g. `1/1 ready`, as last read.")
            .single(
                "model",
                true,
                Block::new("The model to serve.")
                    .attr("path", Type::String, Mode::Required, "A `.safetensors` file in gpucap's model format (see the runtime docs), relative to the working directory or absolute.")
                    .attr("version", Type::String, Mode::OptionalComputed, "The version reported by the endpoint. Default: `1`.")
                    .default_value("version", json!("1")),
            )
            .single(
                "batching",
                false,
                Block::new("Dynamic batching in the runtime.")
                    .attr("max_batch_size", Type::Number, Mode::OptionalComputed, "Rows per batch at most. Default: 64.")
                    .default_value("max_batch_size", json!(64))
                    .attr("max_queue_delay_us", Type::Number, Mode::OptionalComputed, "Microseconds a batch waits to fill. Default: 2000.")
                    .default_value("max_queue_delay_us", json!(2000))
                    .attr("queue_capacity", Type::Number, Mode::OptionalComputed, "Requests that may wait; more get 429. Default: 256.")
                    .default_value("queue_capacity", json!(256))
                    .attr("request_timeout_ms", Type::Number, Mode::OptionalComputed, "Milliseconds before a waiting request gets 504. Default: 10000.")
                    .default_value("request_timeout_ms", json!(10000)),
            )
            .single(
                "replicas",
                false,
                Block::new("How many replicas may run. The `local` driver runs one replica on this host.")
                    .attr("min", Type::Number, Mode::OptionalComputed, "Fewest replicas (0 = scale to zero). Default: 1.")
                    .default_value("min", json!(1))
                    .attr("max", Type::Number, Mode::OptionalComputed, "Most replicas. Default: 1.")
                    .default_value("max", json!(1)),
            )
            .single(
                "data_residency",
                false,
                Block::new("What data the endpoint handles and where it may be processed. Checked at plan time against every pool the endpoint can ever run on.")
                    .attr("classification", Type::String, Mode::OptionalComputed, "`public`, `internal`, `confidential` or `pii`. Default: `internal`.")
                    .default_value("classification", json!("internal"))
                    .attr("allowed_jurisdictions", list_of_strings(), Mode::Optional, "Jurisdictions (`EU`, `US`, …) the endpoint's pools must be in.")
                    .attr("allowed_regions", list_of_strings(), Mode::Optional, "Regions the endpoint's pools must be in."),
            )
            .single(
                "listen",
                false,
                Block::new("Where a local deployment listens.")
                    .attr("host", Type::String, Mode::OptionalComputed, "Address to bind. Default: `127.0.0.1`.")
                    .default_value("host", json!("127.0.0.1"))
                    .attr("port", Type::Number, Mode::OptionalComputed, "Port; 0 picks a free one. Default: 0.")
                    .default_value("port", json!(0)),
            ),
    }
}

/// The pools an endpoint runs on, resolved.
struct Placement {
    base: Vec<PoolInfo>,
    burst: Vec<PoolInfo>,
    policy: Option<PolicyInfo>,
}

impl Placement {
    fn all(&self) -> impl Iterator<Item = &PoolInfo> {
        self.base.iter().chain(&self.burst)
    }
}

#[async_trait]
impl Resource for InferenceEndpoint {
    fn type_name(&self) -> &'static str {
        "gpucap_inference_endpoint"
    }

    fn schema(&self) -> &'static Schema {
        schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        let mut d = Diagnostics::default();
        validate::name(&mut d, c, "name");
        validate::name(&mut d, c, "burst_policy");
        validate::name_list(&mut d, c, "pools");
        validate::int_in(&mut d, c, "batching.max_batch_size", 1, 65_536);
        validate::int_in(&mut d, c, "batching.max_queue_delay_us", 0, 10_000_000);
        validate::int_in(&mut d, c, "batching.queue_capacity", 1, 1_000_000);
        validate::int_in(&mut d, c, "batching.request_timeout_ms", 1, 3_600_000);
        validate::int_in(&mut d, c, "replicas.min", 0, 10_000);
        validate::int_in(&mut d, c, "replicas.max", 1, 10_000);
        validate::min_le_max(&mut d, c, "replicas");
        validate::one_of(&mut d, c, "data_residency.classification", CLASSIFICATIONS);
        validate::int_in(&mut d, c, "listen.port", 0, 65_535);
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
        let placement = resolve_placement(ctx, &state, &mut d);
        if let Some(p) = &placement {
            check_residency(&state, p, &mut d);
            check_capacity(ctx, &state, p, &mut d);
            check_driver(p, &mut d);
            plan_placement(&mut state, p);
        } else {
            for k in [
                "serving_regions",
                "monthly_cost_min_usd",
                "monthly_cost_max_usd",
                "placement_digest",
            ] {
                state.set(k, Value::Unknown);
            }
        }
        if d.has_errors() {
            return Err(d);
        }
        if !creating && needs_restart(&req.prior, &state) {
            plan::set_unknown(&mut state, &["replicas_status"]);
            // A port chosen by the OS changes on restart; a fixed one keeps the URL.
            if state.get("listen").get("port").as_i64().unwrap_or(0) == 0 {
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
        let running = match dir.read_deployment() {
            Ok(d) => d,
            Err(e) => return failed(prior, "Cannot read the endpoint's deployment record", e),
        };
        let restart = prior.is_null() || running.is_none() || needs_restart(&prior, &planned);
        let mut state = planned.clone();
        if restart {
            if let Some(old) = &running {
                let drain = drain_timeout(ctx, &prior);
                if let Err(e) = local::stop(old, drain).await {
                    return failed(prior, "Cannot stop the running replica", e);
                }
                let _ = store::remove(&dir.0.join("deployment.json"));
            }
            let config = match runtime_config(ctx, &planned) {
                Ok(c) => c,
                Err(e) => {
                    return failed(
                        with_status(prior, "0/1 ready (stopped)"),
                        "Cannot configure the runtime",
                        e,
                    );
                }
            };
            match local::start(&ctx.config.runtime_path, &dir, config, &ctx.cancel).await {
                Ok(dep) => {
                    state.set("url", Value::String(model_url(&dep.address, &name)));
                    state.set("replicas_status", Value::String("1/1 ready".into()));
                }
                Err(e) => {
                    // Reality after a failed start: nothing runs. A failed create leaves no state;
                    // a failed update leaves the endpoint recorded as stopped, which the next plan repairs.
                    let detail = format!("{e}\n\nruntime log: {}", dir.log().display());
                    if prior.is_null() {
                        let _ = dir.remove();
                        return failed(Value::Null, "The endpoint did not start", detail);
                    }
                    return failed(
                        with_status(prior, "0/1 ready (start failed)"),
                        "The endpoint did not restart",
                        detail,
                    );
                }
            }
        } else if let Some(dep) = &running {
            state.set("url", Value::String(model_url(&dep.address, &name)));
            state.set("replicas_status", Value::String("1/1 ready".into()));
        }
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
        let deployment = dir
            .read_deployment()
            .map_err(|e| Diagnostic::error("Cannot read the endpoint's deployment record", e))?;
        let recorded: Option<serde_json::Value> = store::read_json(&dir.state())
            .map_err(|e| Diagnostic::error("Cannot read the endpoint's record", e))?;
        let mut state = state;
        match (&deployment, recorded) {
            (None, None) => return Ok(Value::Null),
            (None, Some(_)) => state.set(
                "replicas_status",
                Value::String("0/1 ready (not deployed)".into()),
            ),
            (Some(dep), _) => {
                let status = match local::health(dep).await {
                    Health::Ready => "1/1 ready".to_string(),
                    Health::NotReady => format!("0/1 ready (process {} not ready)", dep.pid),
                    Health::Gone => format!("0/1 ready (process {} exited)", dep.pid),
                };
                state.set("replicas_status", Value::String(status));
                state.set("url", Value::String(model_url(&dep.address, &name)));
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
    match dir.read_deployment() {
        Ok(Some(dep)) => {
            if let Err(e) = local::stop(&dep, drain_timeout(ctx, &prior)).await {
                return failed(prior, "Cannot stop the endpoint", e);
            }
        }
        Ok(None) => {}
        Err(e) => return failed(prior, "Cannot read the endpoint's deployment record", e),
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
        .and_then(|p| ctx.registry.policy(&ctx.config.state_dir, p))
        .map_or(Duration::from_secs(30), |p| {
            Duration::from_secs(p.drain_timeout_s)
        })
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

/// Whether the running replica must restart to match the plan: what the runtime was started with
/// changed, or it is not running.
fn needs_restart(prior: &Value, planned: &Value) -> bool {
    [
        "model",
        "model_sha256",
        "batching",
        "listen",
        "placement_digest",
    ]
    .iter()
    .any(|k| prior.get(k) != planned.get(k))
        || prior.get("replicas_status").as_str() != Some("1/1 ready")
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
    if let Err(e) = gpucap_runtime::model::parse_model(&bytes) {
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

fn resolve_placement(ctx: &Ctx, state: &Value, d: &mut Diagnostics) -> Option<Placement> {
    match state.get("burst_policy") {
        Value::Unknown => None,
        Value::String(name) => {
            let Some(policy) = ctx.registry.policy(&ctx.config.state_dir, name) else {
                d.push(Diagnostic::attr_error(
                    "burst_policy",
                    "Unknown burst policy",
                    format!(
                        "no gpucap_burst_policy named {name:?} exists or is planned. Reference the policy's name \
                         attribute, e.g. burst_policy = gpucap_burst_policy.{name}.name, so that Terraform plans it first"
                    ),
                ));
                return None;
            };
            let lookup = |names: &[String], d: &mut Diagnostics| -> Vec<PoolInfo> {
                names
                    .iter()
                    .filter_map(|n| {
                        let p = ctx.registry.pool(&ctx.config.state_dir, n);
                        if p.is_none() {
                            d.push(unknown_pool(ctx, "burst_policy", n));
                        }
                        p
                    })
                    .collect()
            };
            let base = lookup(&policy.base_pools, d);
            let burst = lookup(&policy.burst_pools, d);
            Some(Placement {
                base,
                burst,
                policy: Some(policy),
            })
        }
        _ => resolve_pools(ctx, state, "pools", d).map(|base| Placement {
            base,
            burst: Vec::new(),
            policy: None,
        }),
    }
}

/// Residency: every pool the endpoint can ever run on lies in its allowed regions and jurisdictions.
fn check_residency(state: &Value, p: &Placement, d: &mut Diagnostics) {
    let residency = state.get("data_residency");
    let list = |k: &str| -> Option<Vec<String>> {
        residency.get(k).as_list().map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
    };
    let via = |pool: &PoolInfo| match &p.policy {
        Some(policy) if policy.burst_pools.contains(&pool.name) => {
            format!(" (a burst pool of policy {:?})", policy.name)
        }
        Some(policy) => format!(" (a base pool of policy {:?})", policy.name),
        None => String::new(),
    };
    if let Some(allowed) = list("allowed_jurisdictions") {
        for pool in p.all().filter(|pool| !allowed.contains(&pool.jurisdiction)) {
            d.push(Diagnostic::attr_error(
                "data_residency.allowed_jurisdictions",
                "Residency violation",
                format!(
                    "pool {:?}{} is in region {:?}, jurisdiction {:?}, but this endpoint's data may only be processed in {}. \
                     Remove the pool from the endpoint's placement or allow its jurisdiction.",
                    pool.name,
                    via(pool),
                    pool.region,
                    pool.jurisdiction,
                    allowed.join(", ")
                ),
            ));
        }
    }
    if let Some(allowed) = list("allowed_regions") {
        for pool in p.all().filter(|pool| !allowed.contains(&pool.region)) {
            d.push(Diagnostic::attr_error(
                "data_residency.allowed_regions",
                "Residency violation",
                format!(
                    "pool {:?}{} is in region {:?}, but this endpoint may only run in regions {}. \
                     Remove the pool from the endpoint's placement or allow its region.",
                    pool.name,
                    via(pool),
                    pool.region,
                    allowed.join(", ")
                ),
            ));
        }
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

/// Every base pool must be reachable by a driver that can deploy the runtime.
fn check_driver(p: &Placement, d: &mut Diagnostics) {
    if let Some(pool) = p.base.first()
        && pool.local_devices.is_none()
    {
        d.push(Diagnostic::attr_error(
            "pools",
            "No driver can deploy to this pool",
            format!("pool {:?} has no local block; this release deploys endpoints with the local driver only", pool.name),
        ));
    }
}

/// Regions, costs and the placement digest: all known at plan time.
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
    let budget = p.policy.as_ref().and_then(|pol| pol.budget_max_hourly_usd);
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

/// The runtime configuration for a planned endpoint on the local driver.
fn runtime_config(
    ctx: &Ctx,
    planned: &Value,
) -> Result<gpucap_runtime::config::RuntimeConfig, String> {
    let model = planned.get("model");
    let path = model
        .get("path")
        .as_str()
        .ok_or("model.path is not known")?;
    let path = std::path::absolute(path).map_err(|e| format!("model.path {path}: {e}"))?;
    let batching = planned.get("batching");
    let listen = planned.get("listen");
    let mut c = gpucap_runtime::config::RuntimeConfig::default();
    c.model.path = Some(path);
    c.model.name = planned.get("name").as_str().map(str::to_string);
    if let Some(v) = model.get("version").as_str() {
        c.model.version = v.to_string();
    }
    let int = |v: &Value, dflt: i64| v.as_i64().unwrap_or(dflt);
    c.batching.max_batch_size = int(batching.get("max_batch_size"), 64) as usize;
    c.batching.max_queue_delay_us = int(batching.get("max_queue_delay_us"), 2000) as u64;
    c.batching.queue_capacity = int(batching.get("queue_capacity"), 256) as usize;
    c.batching.request_timeout_ms = int(batching.get("request_timeout_ms"), 10_000) as u64;
    c.server.listen = format!(
        "{}:{}",
        listen.get("host").as_str().unwrap_or("127.0.0.1"),
        int(listen.get("port"), 0)
    );
    c.compute.device = device_for(ctx, planned);
    c.log.format = gpucap_runtime::config::LogFormat::Json;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The device list of the endpoint's first base pool.
fn device_for(ctx: &Ctx, planned: &Value) -> String {
    let first_pool = match planned.get("burst_policy").as_str() {
        Some(policy) => ctx
            .registry
            .policy(&ctx.config.state_dir, policy)
            .and_then(|p| p.base_pools.first().cloned()),
        None => planned
            .get("pools")
            .as_list()
            .and_then(|l| l.first())
            .and_then(|v| v.as_str().map(str::to_string)),
    };
    first_pool
        .and_then(|p| ctx.registry.pool(&ctx.config.state_dir, &p))
        .and_then(|p| p.local_devices)
        .unwrap_or_else(|| "auto".into())
}
