//! `gpucap_gpu_pool`: a source of GPU capacity — where it is, what it costs, and the driver that
//! reaches it. With the `local` driver the pool is this host's devices.

use async_trait::async_trait;
use serde_json::json;

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::plan;
use crate::regions;
use crate::registry::PoolInfo;
use crate::resources::records;
use crate::schema::{Block, Check, Mode, Schema, list_of_strings, map_of_strings};
use crate::validate;
use crate::value::{Type, Value};
use gpucap_fabric::driver::local;
use gpucap_policy::cost::{Catalog, PoolCost};

/// The resource type.
pub struct GpuPool;

/// Capacity types, cheapest commitment last.
pub const CAPACITY_TYPES: &[(&str, &str)] = &[
    ("on_prem", "owned"),
    ("reserved", "committed cloud capacity"),
    ("on_demand", ""),
    ("spot", "reclaimable"),
];

/// The schema, built once per process.
fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

fn build_schema() -> Schema {
    Schema {
        version: 0,
        block: Block::new("A source of GPU capacity: a region, a price, node bounds and the driver that reaches it.")
            .attr("id", Type::String, Mode::Computed, "The pool's name.")
            .attr("name", Type::String, Mode::Required, "Unique name; endpoints and burst policies refer to the pool by it. Changing it replaces the pool.")
            .force_new("name")
            .check("name", Check::Name)
            .attr("region", Type::String, Mode::Required, "Where the capacity is: a cloud region (`eu-central-1`, `europe-west4`, `westeurope`, …) or an on-prem site name. Changing it replaces the pool.")
            .force_new("region")
            .attr("jurisdiction", Type::String, Mode::OptionalComputed, "Legal jurisdiction of the region (`EU`, `US`, `UK`, `CH`, …). Derived from the built-in region table (see the `gpucap_regions` data source); required for regions the table does not know, such as on-prem sites.")
            .attr("capacity_type", Type::String, Mode::OptionalComputed, "How the capacity is bought.")
            .check("capacity_type", Check::OneOf(CAPACITY_TYPES))
            .default_value("capacity_type", json!("on_prem"))
            .attr("price_per_gpu_hour", Type::Number, Mode::Optional, "USD per GPU-hour (amortised for on-prem and reserved capacity). Unset, the price catalog's figure for `gpu.model` and `capacity_type` is used (see `effective_price_per_gpu_hour` and `price_source`).")
            .check("price_per_gpu_hour", Check::NonNegative)
            .attr("effective_price_per_gpu_hour", Type::Number, Mode::Computed, "The price the cost attributes use: `price_per_gpu_hour`, else the catalog's; null when neither has one.")
            .attr("price_source", Type::String, Mode::Computed, "Where `effective_price_per_gpu_hour` comes from: stated on the pool, or the catalog entry's source.")
            .attr("tenancy", Type::String, Mode::OptionalComputed, "Whether the hardware is dedicated to you or shared with other tenants.")
            .check("tenancy", Check::OneOf(&[("dedicated", ""), ("shared", "")]))
            .default_value("tenancy", json!("shared"))
            .attr("labels", map_of_strings(), Mode::Optional, "Free-form labels, readable by policy rules.")
            .attr("gpus_min", Type::Number, Mode::Computed, "GPUs at the pool's minimum size: `nodes.min × gpu.per_node`.")
            .attr("gpus_max", Type::Number, Mode::Computed, "GPUs at the pool's maximum size: `nodes.max × gpu.per_node`.")
            .attr("hourly_cost_min_usd", Type::Number, Mode::Computed, "Cost per hour at minimum size.")
            .attr("hourly_cost_max_usd", Type::Number, Mode::Computed, "Cost per hour at maximum size.")
            .attr("devices", list_of_strings(), Mode::Computed, "Devices the driver found, e.g. `[\"cpu\"]` or `[\"cuda:0\", \"cuda:1\"]` (`local` driver).")
            .single(
                "gpu",
                true,
                Block::new("The accelerator each node has.")
                    .attr("model", Type::String, Mode::Required, "GPU model: `H100`, `A100`, `L4`, `A10G`, … or `cpu` for CPU-only capacity.")
                    .attr("per_node", Type::Number, Mode::OptionalComputed, "GPUs per node.")
                    .check("per_node", Check::IntIn(1, 64))
                    .default_value("per_node", json!(1))
                    .attr("memory_gib", Type::Number, Mode::Optional, "Memory per GPU in GiB.")
                    .check("memory_gib", Check::NonNegative),
            )
            .single(
                "nodes",
                true,
                Block::new("How many nodes the pool may have.")
                    .attr("min", Type::Number, Mode::OptionalComputed, "Fewest nodes.")
                    .check("min", Check::IntIn(0, 100_000))
                    .default_value("min", json!(0))
                    .attr("max", Type::Number, Mode::Required, "Most nodes.")
                    .check("max", Check::IntIn(1, 100_000)),
            )
            .single(
                "local",
                false,
                Block::new("The `local` driver: the pool is this host's devices.")
                    .attr("devices", Type::String, Mode::OptionalComputed, "`auto` (the GPUs if any, else the CPU), `cpu`, or CUDA devices such as `cuda:0,cuda:1`.")
                    .default_value("devices", json!("auto")),
            ),
    }
}

#[async_trait]
impl Resource for GpuPool {
    fn type_name(&self) -> &'static str {
        "gpucap_gpu_pool"
    }

    fn schema(&self) -> &'static Schema {
        schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        let mut d = validate::schema(&schema().block, c);
        validate::min_le_max(&mut d, c, "nodes");
        if let Some(r) = c.get("region").as_str()
            && r.trim().is_empty()
        {
            d.push(Diagnostic::attr_error(
                "region",
                "Empty region",
                "name the region or on-prem site the capacity is in",
            ));
        }
        if let Some(j) = c.get("jurisdiction").as_str()
            && (j.is_empty() || !j.chars().all(|ch| ch.is_ascii_uppercase()))
        {
            d.push(Diagnostic::attr_error(
                "jurisdiction",
                "Invalid jurisdiction",
                format!(
                    "{j:?} is not a jurisdiction code; use uppercase letters such as {}",
                    regions::jurisdictions().join(", ")
                ),
            ));
        }
        if let Some(spec) = c.get("local").get("devices").as_str()
            && let Err(e) = gpucap_fabric::driver::local::check_devices(spec)
        {
            d.push(Diagnostic::attr_error(
                "local.devices",
                "Invalid device list",
                e,
            ));
        }
        // Exactly one driver block; `local` is the only driver in this release.
        let c_known = !c.get("local").is_unknown();
        if c_known && c.get("local").is_null() {
            d.push(Diagnostic::error(
                "No driver for the pool",
                "a gpucap_gpu_pool needs exactly one driver block; add `local {}` to use this host's devices",
            ));
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
        let mut d = Diagnostics::default();

        if let Some(name) = state.get("name").as_str() {
            state.set("id", Value::String(name.to_string()));
        }
        resolve_jurisdiction(&mut state, &req.config, &mut d);
        derive_capacity(&mut state, &ctx.config.catalog);
        match state
            .get("local")
            .get("devices")
            .as_str()
            .map(local::devices_for)
        {
            Some(Ok(found)) => state.set(
                "devices",
                Value::List(found.into_iter().map(Value::String).collect()),
            ),
            Some(Err(e)) => d.push(Diagnostic::attr_error(
                "local.devices",
                "Devices not available on this host",
                e,
            )),
            None => state.set("devices", Value::Unknown),
        }
        if d.has_errors() {
            return Err(d);
        }
        if let Some(info) = PoolInfo::from_state(&state) {
            ctx.registry.put_pool(info);
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
        let applied = records::apply(ctx, "pools", "pool", prior, planned);
        if let Some(info) = PoolInfo::from_state(&applied.state) {
            ctx.registry.put_pool(info);
        }
        applied
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let mut state = records::read(ctx, "pools", "pool", state)?;
        if state.is_null() {
            return Ok(state);
        }
        // What the host has now is reality; the next plan shows a change when it differs.
        if let Some(Ok(found)) = state
            .get("local")
            .get("devices")
            .as_str()
            .map(local::devices_for)
        {
            state.set(
                "devices",
                Value::List(found.into_iter().map(Value::String).collect()),
            );
        }
        if let Some(info) = PoolInfo::from_state(&state) {
            ctx.registry.put_pool(info);
        }
        Ok(state)
    }

    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics> {
        records::import(ctx, "pools", self.type_name(), name, self.state_type())
    }
}

/// Fills `jurisdiction` from the region table, or checks a stated one against it.
fn resolve_jurisdiction(state: &mut Value, config: &Value, d: &mut Diagnostics) {
    let Some(region) = state.get("region").as_str().map(str::to_string) else {
        return;
    };
    let stated = config.get("jurisdiction");
    if stated.is_unknown() {
        return;
    }
    match (regions::lookup(&region), stated.as_str()) {
        (Some(r), None) => state.set("jurisdiction", Value::String(r.jurisdiction.to_string())),
        (Some(r), Some(j)) if j != r.jurisdiction => d.push(Diagnostic::attr_error(
            "jurisdiction",
            "Jurisdiction contradicts the region",
            format!("region {region:?} ({}, {}) is in jurisdiction {:?}, not {j:?}; remove jurisdiction to derive it", r.location, r.country, r.jurisdiction),
        )),
        (Some(_), Some(_)) => {}
        (None, Some(j)) => state.set("jurisdiction", Value::String(j.to_string())),
        (None, None) => {
            let hint = regions::suggest(&region).map(|s| format!(" Did you mean {s:?}?")).unwrap_or_default();
            d.push(Diagnostic::attr_error(
                "jurisdiction",
                "Jurisdiction required",
                format!("region {region:?} is not in the built-in region table (an on-prem site?), so its jurisdiction cannot be derived; set jurisdiction, e.g. \"EU\".{hint}"),
            ));
        }
    }
}

/// GPUs and cost at minimum and maximum size, from the shared cost model: known at plan time
/// whenever the inputs are (the price is the pool's own, else the price catalog's).
fn derive_capacity(state: &mut Value, catalog: &Catalog) {
    let per_node = state.get("gpu").get("per_node").as_i64();
    let nodes = state.get("nodes");
    let (min, max) = (nodes.get("min").as_i64(), nodes.get("max").as_i64());
    let stated = state.get("price_per_gpu_hour").clone();
    let model = state.get("gpu").get("model").as_str().map(str::to_string);
    let capacity_type = state.get("capacity_type").as_str().map(str::to_string);
    let (Some(per_node), Some(min), Some(max), Some(model), Some(capacity_type)) =
        (per_node, min, max, model, capacity_type)
    else {
        for k in COST_ATTRIBUTES {
            state.set(k, Value::Unknown);
        }
        return;
    };
    if stated.is_unknown() {
        for k in &COST_ATTRIBUTES[2..] {
            state.set(k, Value::Unknown);
        }
        state.set("gpus_min", Value::Int(min * per_node));
        state.set("gpus_max", Value::Int(max * per_node));
        return;
    }
    let cost = PoolCost::new(
        stated.as_f64(),
        &model,
        &capacity_type,
        min * per_node,
        max * per_node,
        catalog,
    );
    let number = |v: Option<f64>| v.map_or(Value::Null, Value::Float);
    state.set("gpus_min", Value::Int(cost.gpus_min));
    state.set("gpus_max", Value::Int(cost.gpus_max));
    state.set(
        "effective_price_per_gpu_hour",
        number(cost.usd_per_gpu_hour),
    );
    state.set("price_source", Value::String(cost.source.describe()));
    state.set("hourly_cost_min_usd", number(cost.hourly_min()));
    state.set("hourly_cost_max_usd", number(cost.hourly_max()));
}

/// The attributes [`derive_capacity`] computes.
const COST_ATTRIBUTES: [&str; 6] = [
    "gpus_min",
    "gpus_max",
    "effective_price_per_gpu_hour",
    "price_source",
    "hourly_cost_min_usd",
    "hourly_cost_max_usd",
];

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::{Harness, errors};

    const POOL: &str = "gpucap_gpu_pool";

    #[test]
    fn validation_names_the_attribute_and_what_is_valid() {
        let h = Harness::new();
        let d = h.validate(
            POOL,
            json!({"name": "Bad Name", "region": "eu-central-1", "capacity_type": "cheap",
                   "gpu": {"model": "H100"}, "nodes": {"min": 3, "max": 2}}),
        );
        let text = errors(&d);
        assert!(text.contains("capacity_type"), "{text}");
        assert!(
            text.contains("on_demand"),
            "the valid values are listed: {text}"
        );
        assert!(
            d.0.iter().any(|d| d.path.is_some()),
            "errors point at attributes"
        );
        assert!(d.0.len() >= 3, "every bad attribute is reported: {text}");
    }

    #[test]
    fn plan_derives_jurisdiction_and_prices_from_the_catalog() {
        let h = Harness::new();
        let planned = h
            .plan_create(
                POOL,
                json!({"name": "cloud", "region": "eu-central-1", "capacity_type": "on_demand",
                       "gpu": {"model": "H100", "per_node": 8}, "nodes": {"max": 2},
                       "local": {"devices": "cpu"}}),
            )
            .expect("plan");
        let s = &planned.state;
        assert_eq!(s.get("jurisdiction").as_str(), Some("EU"));
        assert_eq!(s.get("effective_price_per_gpu_hour").as_f64(), Some(6.88));
        assert_eq!(s.get("gpus_max").as_i64(), Some(16));
        let max = s
            .get("hourly_cost_max_usd")
            .as_f64()
            .expect("cost known at plan");
        assert!((max - 110.08).abs() < 1e-9, "16 GPUs x 6.88: {max}");
        assert!(
            s.get("price_source")
                .as_str()
                .is_some_and(|p| p.starts_with("catalog:"))
        );
        assert_eq!(s.get("id").as_str(), Some("cloud"), "the id is the name");
    }

    #[test]
    fn a_model_no_catalog_prices_has_no_cost() {
        let h = Harness::new();
        let planned = h
            .plan_create(
                POOL,
                json!({"name": "exotic", "region": "eu-west-1", "gpu": {"model": "MI300X"},
                       "nodes": {"max": 1}, "local": {"devices": "cpu"}}),
            )
            .expect("plan");
        assert!(planned.state.get("hourly_cost_max_usd").is_null());
    }
}
