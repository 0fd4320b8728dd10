//! `gpucap_burst_policy`: how load spills from baseline pools to burst pools and back, within a
//! budget. Pools are named; names resolve at plan time against the pools of this run.

use async_trait::async_trait;
use serde_json::json;

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::plan;
use crate::registry::{BurstPolicyInfo, PoolInfo};
use crate::resources::records;
use crate::schema::{Block, Check, Mode, Schema, list_of_strings};
use crate::validate;
use crate::value::{Type, Value};

/// The resource type.
pub struct BurstPolicy;

/// The schema, built once per process.
fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

fn build_schema() -> Schema {
    Schema {
        version: 0,
        block: Block::new("How an endpoint's load spills from baseline pools to burst pools and back, within a budget.")
            .attr("id", Type::String, Mode::Computed, "The policy's name.")
            .attr("name", Type::String, Mode::Required, "Unique name; endpoints refer to the policy by it. Changing it replaces the policy.")
            .force_new("name")
            .check("name", Check::Name)
            .attr("base_pools", list_of_strings(), Mode::Required, "Names of the pools that carry the baseline, in order of preference. Reference them as `gpucap_gpu_pool.NAME.name` so Terraform orders the plan.")
            .check("base_pools", Check::NameList)
            .attr("burst_pools", list_of_strings(), Mode::Optional, "Names of the pools load spills to when the baseline is saturated.")
            .check("burst_pools", Check::NameList)
            .attr("placement", Type::String, Mode::OptionalComputed, "The order load spills to burst pools in.")
            .check("placement", Check::OneOf(&[("ordered", "burst pools in the order listed"), ("cheapest", "lowest price first")]))
            .default_value("placement", json!("ordered"))
            .attr("spot_fallback", Type::String, Mode::OptionalComputed, "Where load goes when spot capacity is reclaimed.")
            .check("spot_fallback", Check::OneOf(&[("none", ""), ("on_demand", "")]))
            .default_value("spot_fallback", json!("none"))
            .attr("predictive", Type::Bool, Mode::OptionalComputed, "Start burst replicas a cold start ahead of the load's recurring daily and weekly rises, learned from what the endpoint's router has seen, instead of waiting for queues to grow. The first two days are learned, not predicted; `gpucap-fabric simulate` shows what it buys on a trace.")
            .default_value("predictive", json!(false))
            .attr("max_hourly_cost_usd", Type::Number, Mode::Computed, "Most this policy can spend per hour: every base pool at maximum size plus burst spend, capped by `budget.max_hourly_usd`. Null while a pool has no price.")
            .single(
                "scale_up",
                false,
                Block::new("When to add burst capacity; any signal sustained for `for` triggers it.")
                    .attr("queue_depth", Type::Number, Mode::Optional, "Requests waiting per replica.")
                    .check("queue_depth", Check::IntIn(1, 1_000_000))
                    .attr("p99_latency_ms", Type::Number, Mode::Optional, "99th percentile latency in milliseconds.")
                    .check("p99_latency_ms", Check::IntIn(1, 3_600_000))
                    .attr("gpu_utilization", Type::Number, Mode::Optional, "Busy fraction of the devices.")
                    .check("gpu_utilization", Check::Fraction)
                    .attr("for", Type::String, Mode::OptionalComputed, "How long a signal must hold.")
                    .check("for", Check::Duration)
                    .default_value("for", json!("1m")),
            )
            .single(
                "scale_down",
                false,
                Block::new("When to release burst capacity.")
                    .attr("idle_for", Type::String, Mode::OptionalComputed, "Idle time before a burst replica is released.")
                    .check("idle_for", Check::Duration)
                    .default_value("idle_for", json!("10m"))
                    .attr("min_warm_replicas", Type::Number, Mode::OptionalComputed, "Replicas kept warm against cold starts.")
                    .check("min_warm_replicas", Check::IntIn(0, 10_000))
                    .default_value("min_warm_replicas", json!(0))
                    .attr("drain_timeout", Type::String, Mode::OptionalComputed, "How long a replica may take to answer what it accepted before it is stopped.")
                    .check("drain_timeout", Check::Duration)
                    .default_value("drain_timeout", json!("30s")),
            )
            .single(
                "budget",
                false,
                Block::new("A cap on burst spend.")
                    .attr("max_hourly_usd", Type::Number, Mode::Required, "USD per hour burst capacity may cost.")
                    .check("max_hourly_usd", Check::NonNegative)
                    .attr("on_exhausted", Type::String, Mode::OptionalComputed, "What happens to requests when the budget is spent.")
                    .check("on_exhausted", Check::OneOf(&[("queue", "they wait"), ("reject", "they get 429")]))
                    .default_value("on_exhausted", json!("queue")),
            ),
    }
}

#[async_trait]
impl Resource for BurstPolicy {
    fn type_name(&self) -> &'static str {
        "gpucap_burst_policy"
    }

    fn schema(&self) -> &'static Schema {
        schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        let mut d = validate::schema(&schema().block, c);
        if c.get("base_pools")
            .as_list()
            .is_some_and(<[Value]>::is_empty)
        {
            d.push(Diagnostic::attr_error(
                "base_pools",
                "No base pools",
                "list at least one pool that carries the baseline",
            ));
        }
        if let (Some(base), Some(burst)) = (
            c.get("base_pools").as_list(),
            c.get("burst_pools").as_list(),
        ) {
            for (i, p) in burst.iter().enumerate() {
                if p.as_str().is_some() && base.contains(p) {
                    d.push(Diagnostic::attr_error(
                        &format!("burst_pools[{i}]"),
                        "Pool is both base and burst",
                        format!("{:?} is already in base_pools; a pool is either baseline or burst capacity", p.as_str().unwrap_or_default()),
                    ));
                }
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
        let base = resolve_pools(ctx, &state, "base_pools", &mut d);
        let burst = resolve_pools(ctx, &state, "burst_pools", &mut d);
        if d.has_errors() {
            return Err(d);
        }
        let cost = match (base, burst) {
            (Some(base), Some(burst)) => {
                max_hourly_cost(&base, &burst, state.get("budget").get("max_hourly_usd"))
            }
            _ => Value::Unknown,
        };
        state.set("max_hourly_cost_usd", cost);
        if let Some(info) = BurstPolicyInfo::from_state(&state) {
            ctx.registry.put_burst_policy(info);
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
        let applied = records::apply(ctx, "policies", "burst policy", prior, planned);
        if let Some(info) = BurstPolicyInfo::from_state(&applied.state) {
            ctx.registry.put_burst_policy(info);
        }
        applied
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let state = records::read(ctx, "policies", "burst policy", state)?;
        if let Some(info) = BurstPolicyInfo::from_state(&state) {
            ctx.registry.put_burst_policy(info);
        }
        Ok(state)
    }

    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics> {
        records::import(ctx, "policies", self.type_name(), name, self.state_type())
    }
}

/// Resolves a list of pool names; `None` while the list is unknown. Unknown names are errors.
pub fn resolve_pools(
    ctx: &Ctx,
    state: &Value,
    attr: &str,
    d: &mut Diagnostics,
) -> Option<Vec<PoolInfo>> {
    let list = match state.get(attr) {
        Value::Null => return Some(Vec::new()),
        v => v.as_list()?,
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let name = item.as_str()?;
        match ctx.registry.pool(&ctx.config.state_dir, name) {
            Some(p) => out.push(p),
            None => d.push(unknown_pool(ctx, &format!("{attr}[{i}]"), name)),
        }
    }
    Some(out)
}

/// The error for a pool name nothing in this run or in `state_dir` knows.
pub fn unknown_pool(ctx: &Ctx, path: &str, name: &str) -> Diagnostic {
    let known = ctx.registry.pool_names();
    let known = if known.is_empty() {
        "none in this configuration".to_string()
    } else {
        known.join(", ")
    };
    Diagnostic::attr_error(
        path,
        "Unknown pool",
        format!(
            "no gpucap_gpu_pool named {name:?} exists or is planned (known pools: {known}). Reference the pool's \
             name attribute, e.g. gpucap_gpu_pool.{name}.name, so that Terraform plans the pool first"
        ),
    )
}

fn max_hourly_cost(base: &[PoolInfo], burst: &[PoolInfo], budget: &Value) -> Value {
    let costs = |pools: &[PoolInfo]| pools.iter().map(PoolInfo::cost).collect::<Vec<_>>();
    gpucap_policy::cost::policy_max_hourly(&costs(base), &costs(burst), budget.as_f64())
        .map_or(Value::Null, Value::Float)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::{Harness, errors};

    /// A harness with an on-demand H100 pool `cloud` ($6.88/GPU-h, 8 GPUs) and an on-prem pool
    /// `rack` priced at $2/GPU-h (4 GPUs) planned.
    fn with_pools() -> Harness {
        let h = Harness::new();
        for pool in [
            json!({"name": "rack", "region": "eu-central-1", "capacity_type": "on_prem",
                   "price_per_gpu_hour": 2.0, "gpu": {"model": "H100", "per_node": 4},
                   "nodes": {"min": 1, "max": 1}, "local": {"devices": "cpu"}}),
            json!({"name": "cloud", "region": "eu-west-1", "capacity_type": "on_demand",
                   "gpu": {"model": "H100", "per_node": 8}, "nodes": {"max": 1},
                   "local": {"devices": "cpu"}}),
        ] {
            h.plan_create("gpucap_gpu_pool", pool).expect("pool plan");
        }
        h
    }

    #[test]
    fn defaults_and_the_spend_ceiling_are_planned() {
        let h = with_pools();
        let planned = h
            .plan_create(
                "gpucap_burst_policy",
                json!({"name": "spill", "base_pools": ["rack"], "burst_pools": ["cloud"],
                       "budget": {"max_hourly_usd": 20}}),
            )
            .expect("plan");
        let s = &planned.state;
        assert_eq!(s.get("id").as_str(), Some("spill"));
        assert_eq!(s.get("placement").as_str(), Some("ordered"));
        assert_eq!(s.get("predictive").as_bool(), Some(false));
        // The base pool at its size (4 x $2) plus burst spend capped by the budget ($20).
        assert_eq!(s.get("max_hourly_cost_usd").as_f64(), Some(28.0));
    }

    #[test]
    fn an_unknown_pool_is_named_with_the_known_ones() {
        let h = with_pools();
        let d = h
            .plan_create(
                "gpucap_burst_policy",
                json!({"name": "spill", "base_pools": ["rack"], "burst_pools": ["clod"]}),
            )
            .expect_err("unknown pool");
        let text = errors(&d);
        assert!(
            text.contains(r#"no gpucap_gpu_pool named "clod""#),
            "{text}"
        );
        assert!(text.contains("known pools: cloud, rack"), "{text}");
    }

    #[test]
    fn a_pool_cannot_be_both_base_and_burst() {
        let h = Harness::new();
        let d = h.validate(
            "gpucap_burst_policy",
            json!({"name": "spill", "base_pools": ["rack"], "burst_pools": ["rack"]}),
        );
        assert!(errors(&d).contains("Pool is both base and burst"), "{d:?}");
    }
}
