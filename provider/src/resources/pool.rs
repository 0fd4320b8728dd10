//! `gpucap_gpu_pool`: a source of GPU capacity — where it is, what it costs, and the driver that
//! reaches it. With the `local` driver the pool is this host's devices.

use async_trait::async_trait;

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::aws;
use crate::diag::{Diagnostic, Diagnostics};
use crate::models::pool::{self as model, GpuPool as Model};
use crate::models::{self, Attr};
use crate::plan;
use crate::regions;
use crate::registry::PoolInfo;
use crate::resources::records;
use crate::schema::Schema;
use crate::validate;
use crate::value::Value;
use gpucap_fabric::driver::aws::GroupState;
use gpucap_fabric::driver::local;
use gpucap_policy::cost::{Catalog, PoolCost};

/// The resource type.
pub struct GpuPool;

#[async_trait]
impl Resource for GpuPool {
    fn type_name(&self) -> &'static str {
        model::TYPE_NAME
    }

    fn schema(&self) -> &'static Schema {
        model::schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        let mut d = validate::typed(&model::schema().block, c, |m: &Model, d| {
            if let Some(r) = m.region.as_str()
                && r.trim().is_empty()
            {
                d.push(Diagnostic::attr_error(
                    "region",
                    "Empty region",
                    "name the region or on-prem site the capacity is in",
                ));
            }
            if let Some(j) = m.jurisdiction.as_str()
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
            if let Some(spec) = m.local.known().and_then(|l| l.devices.as_str())
                && let Err(e) = local::check_devices(spec)
            {
                d.push(Diagnostic::attr_error(
                    "local.devices",
                    "Invalid device list",
                    e.to_string(),
                ));
            }
            check_driver_blocks(m, d);
        });
        validate::min_le_max(&mut d, c, "nodes");
        d
    }

    fn plan(&self, ctx: &Ctx, req: &PlanRequest) -> Result<Planned, Diagnostics> {
        let stated = models::decode_object::<Model>(&req.config)?.unwrap_or_default();
        let planned = plan::typed(model::schema(), self.state_type(), req, |m: &mut Model| {
            let mut d = Diagnostics::default();
            resolve_jurisdiction(m, &stated.jurisdiction, &mut d);
            derive_capacity(m, &ctx.config.catalog);
            if m.aws_autoscaling_group.is_null() {
                match m
                    .local
                    .known()
                    .and_then(|l| l.devices.as_str())
                    .map(local::devices_for)
                {
                    Some(Ok(found)) => m.devices = names(found),
                    Some(Err(e)) => d.push(Diagnostic::attr_error(
                        "local.devices",
                        "Devices not available on this host",
                        e.to_string(),
                    )),
                    None => m.devices = Attr::Unknown,
                }
            } else {
                check_group(ctx, m, &mut d);
            }
            if d.has_errors() { Err(d) } else { Ok(d) }
        })?;
        remember(ctx, &planned.state);
        Ok(planned)
    }

    async fn apply(&self, ctx: &Ctx, prior: Value, planned: Value) -> Applied {
        let applied = records::apply(ctx, "pools", "pool", prior, planned);
        remember(ctx, &applied.state);
        applied
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let state = records::read(ctx, "pools", "pool", state)?;
        if state.is_null() {
            return Ok(state);
        }
        let mut m: Model = models::decode(&state)?;
        // What the group reports now is reality: its bounds, desired capacity and instances.
        if let Some(group) = group_ref(ctx, &m)
            && let Ok(Some(g)) = aws::read_group(&group)
        {
            record_group(&mut m, &g);
        }
        // What the host has now is reality; the next plan shows a change when it differs.
        if let Some(Ok(found)) = m
            .local
            .known()
            .and_then(|l| l.devices.as_str())
            .map(local::devices_for)
        {
            m.devices = names(found);
        }
        let state = models::encode(&m, self.state_type())?;
        remember(ctx, &state);
        Ok(state)
    }

    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics> {
        records::import(ctx, "pools", self.type_name(), name, self.state_type())
    }
}

/// Exactly one driver block, and join tokens where machines join.
fn check_driver_blocks(m: &Model, d: &mut Diagnostics) {
    match (m.local.is_null(), m.aws_autoscaling_group.is_null()) {
        (true, true) => d.push(Diagnostic::error(
            "No driver for the pool",
            "a gpucap_gpu_pool needs exactly one driver block: `local {}` for this host's devices, or `aws_autoscaling_group { name = \"…\" }`",
        )),
        (false, false) => d.push(Diagnostic::attr_error(
            "aws_autoscaling_group",
            "Two drivers for one pool",
            "a gpucap_gpu_pool has exactly one driver block; remove `local` or `aws_autoscaling_group`",
        )),
        _ => {}
    }
    let hashes = m
        .join_token_sha256
        .known()
        .map(|v| v.as_slice())
        .unwrap_or_default();
    for (i, h) in hashes.iter().enumerate() {
        if let Some(h) = h.as_str()
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            d.push(Diagnostic::attr_error(
                &format!("join_token_sha256[{i}]"),
                "Not a SHA-256",
                format!("{h:?} is not 64 hex digits; use a gpucap_join_token's sha256"),
            ));
        }
    }
    if !m.aws_autoscaling_group.is_null() && m.join_token_sha256.is_null() {
        d.push(Diagnostic::attr_error(
            "join_token_sha256",
            "Join token required",
            "the group's instances join the router with a token; set join_token_sha256 = [gpucap_join_token.NAME.sha256]",
        ));
    }
}

/// The pool's group, when its name and region are known.
fn group_ref(ctx: &Ctx, m: &Model) -> Option<gpucap_fabric::driver::aws::GroupRef> {
    let block = m.aws_autoscaling_group.known()?;
    Some(
        ctx.config
            .aws
            .group(block.name.as_str()?, m.region.as_str()?),
    )
}

/// Fills the computed attributes from the group as read.
fn record_group(m: &mut Model, g: &GroupState) {
    if let Some(block) = m.aws_autoscaling_group.known_mut() {
        block.min_size = Attr::Known(i64::from(g.min_size));
        block.max_size = Attr::Known(i64::from(g.max_size));
        block.desired_capacity = Attr::Known(i64::from(g.desired));
        block.in_service = Attr::Known(
            g.instances
                .iter()
                .filter(|i| i.lifecycle == "InService")
                .count() as i64,
        );
    }
}

/// Plan reads the group: one that does not exist in the pool's region, or whose `MaxSize` is
/// below `nodes.max`, is an error; a capacity type the group's purchase options contradict is a
/// warning.
fn check_group(ctx: &Ctx, m: &mut Model, d: &mut Diagnostics) {
    let Some(group) = group_ref(ctx, m) else {
        return;
    };
    m.devices = names(vec![format!("aws:{}", group.name)]);
    let g = match aws::read_group(&group) {
        Ok(Some(g)) => g,
        Ok(None) => {
            d.push(Diagnostic::attr_error(
                "aws_autoscaling_group.name",
                "Auto Scaling group not found",
                format!(
                    "there is no Auto Scaling group {:?} in {} (the pool's region); create it first (with the AWS provider) or fix the name or the region",
                    group.name, group.region
                ),
            ));
            return;
        }
        Err(e) => {
            d.push(Diagnostic::attr_error(
                "aws_autoscaling_group.name",
                "Cannot read the Auto Scaling group",
                format!("{e}; check the AWS credentials of the environment Terraform runs in, or the provider's aws block"),
            ));
            return;
        }
    };
    record_group(m, &g);
    if let Some(max) = m.nodes.known().and_then(|n| n.max.get())
        && max > i64::from(g.max_size)
    {
        d.push(Diagnostic::attr_error(
            "nodes.max",
            "More nodes than the group may have",
            format!(
                "nodes.max is {max} but Auto Scaling group {:?} has MaxSize {}; gpucap never changes the group's bounds: raise MaxSize or lower nodes.max",
                group.name, g.max_size
            ),
        ));
    }
    let all_on_demand = !g.mixed_instances || g.on_demand_percentage >= 100;
    let all_spot = g.mixed_instances && g.on_demand_percentage == 0 && g.on_demand_base == 0;
    match m.capacity_type.as_str() {
        Some("spot") if all_on_demand => d.push(Diagnostic::attr_warning(
            "capacity_type",
            "The group buys no spot capacity",
            format!(
                "the pool is declared spot but Auto Scaling group {:?} has no spot share in a mixed-instances policy: its instances are on-demand, and prices and fallbacks will be wrong",
                group.name
            ),
        )),
        Some("on_demand") if all_spot => d.push(Diagnostic::attr_warning(
            "capacity_type",
            "The group buys only spot capacity",
            format!(
                "the pool is declared on_demand but Auto Scaling group {:?} launches only spot instances, which AWS may reclaim",
                group.name
            ),
        )),
        _ => {}
    }
}

/// Lets the policies and endpoints of this run resolve the pool by name.
fn remember(ctx: &Ctx, state: &Value) {
    if let Some(info) = PoolInfo::from_state(state) {
        ctx.registry.put_pool(info);
    }
}

fn names(found: Vec<String>) -> models::Names {
    Attr::Known(found.into_iter().map(Attr::Known).collect())
}

/// Fills `jurisdiction` from the region table, or checks the one the configuration states.
fn resolve_jurisdiction(m: &mut Model, stated: &Attr<String>, d: &mut Diagnostics) {
    let Some(region) = m.region.as_str().map(str::to_string) else {
        return;
    };
    if stated.is_unknown() {
        return;
    }
    match (regions::lookup(&region), stated.as_str()) {
        (Some(r), None) => m.jurisdiction = Attr::Known(r.jurisdiction.to_string()),
        (Some(r), Some(j)) if j != r.jurisdiction => d.push(Diagnostic::attr_error(
            "jurisdiction",
            "Jurisdiction contradicts the region",
            format!("region {region:?} ({}, {}) is in jurisdiction {:?}, not {j:?}; remove jurisdiction to derive it", r.location, r.country, r.jurisdiction),
        )),
        (Some(_), Some(_)) => {}
        (None, Some(j)) => m.jurisdiction = Attr::Known(j.to_string()),
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
fn derive_capacity(m: &mut Model, catalog: &Catalog) {
    let gpu = m.gpu.known();
    let nodes = m.nodes.known();
    let per_node = gpu.and_then(|g| g.per_node.get());
    let (min, max) = (
        nodes.and_then(|n| n.min.get()),
        nodes.and_then(|n| n.max.get()),
    );
    let model = gpu.and_then(|g| g.model.as_str()).map(str::to_string);
    let (Some(per_node), Some(min), Some(max), Some(model), Some(capacity_type)) = (
        per_node,
        min,
        max,
        model,
        m.capacity_type.as_str().map(str::to_string),
    ) else {
        m.gpus_min = Attr::Unknown;
        m.gpus_max = Attr::Unknown;
        unknown_cost(m);
        return;
    };
    if m.price_per_gpu_hour.is_unknown() {
        m.gpus_min = Attr::Known(min * per_node);
        m.gpus_max = Attr::Known(max * per_node);
        unknown_cost(m);
        return;
    }
    let cost = PoolCost::new(
        m.price_per_gpu_hour.get(),
        &model,
        &capacity_type,
        min * per_node,
        max * per_node,
        catalog,
    );
    m.gpus_min = Attr::Known(cost.gpus_min);
    m.gpus_max = Attr::Known(cost.gpus_max);
    m.effective_price_per_gpu_hour = cost.usd_per_gpu_hour.into();
    m.price_source = Attr::Known(cost.source.describe());
    m.hourly_cost_min_usd = cost.hourly_min().into();
    m.hourly_cost_max_usd = cost.hourly_max().into();
}

/// The price and costs, unknown until their inputs are.
fn unknown_cost(m: &mut Model) {
    m.effective_price_per_gpu_hour = Attr::Unknown;
    m.price_source = Attr::Unknown;
    m.hourly_cost_min_usd = Attr::Unknown;
    m.hourly_cost_max_usd = Attr::Unknown;
}

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

    #[test]
    fn a_destroy_plans_null() {
        let h = Harness::new();
        let created = h
            .plan_create(
                POOL,
                json!({"name": "rack", "region": "eu-central-1", "gpu": {"model": "cpu"},
                       "nodes": {"max": 1}, "local": {}}),
            )
            .expect("create");
        let destroy = h
            .provider
            .plan_resource(
                POOL,
                crate::api::PlanRequest {
                    prior: created.state,
                    proposed: crate::value::Value::Null,
                    config: crate::value::Value::Null,
                },
            )
            .expect("destroy");
        assert!(destroy.state.is_null());
    }
}
