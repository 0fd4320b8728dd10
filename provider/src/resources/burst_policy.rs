//! `gpucap_burst_policy`: how load spills from baseline pools to burst pools and back, within a
//! budget. Pools are named; names resolve at plan time against the pools of this run.

use async_trait::async_trait;
use gpucap_fabric::config::{ScaleDownSection, ScaleUpSection};

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::models::burst_policy::{self as model, BurstPolicy as Model};
use crate::models::{Attr, Names};
use crate::plan;
use crate::registry::{BurstPolicyInfo, PoolInfo};
use crate::resources::records;
use crate::schema::Schema;
use crate::validate;
use crate::value::Value;

/// The resource type.
pub struct BurstPolicy;

#[async_trait]
impl Resource for BurstPolicy {
    fn type_name(&self) -> &'static str {
        model::TYPE_NAME
    }

    fn schema(&self) -> &'static Schema {
        model::schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        validate::typed(&model::schema().block, c, |m: &Model, d| {
            let base = m.base_pools.known();
            if base.is_some_and(Vec::is_empty) {
                d.push(Diagnostic::attr_error(
                    "base_pools",
                    "No base pools",
                    "list at least one pool that carries the baseline",
                ));
            }
            if let (Some(base), Some(burst)) = (base, m.burst_pools.known()) {
                for (i, pool) in burst.iter().enumerate() {
                    if let Some(name) = pool.as_str()
                        && base.contains(pool)
                    {
                        d.push(Diagnostic::attr_error(
                            &format!("burst_pools[{i}]"),
                            "Pool is both base and burst",
                            format!("{name:?} is already in base_pools; a pool is either baseline or burst capacity"),
                        ));
                    }
                }
            }
            check_windows(m, d);
        })
    }

    fn plan(&self, ctx: &Ctx, req: &PlanRequest) -> Result<Planned, Diagnostics> {
        let planned = plan::typed(model::schema(), self.state_type(), req, |m: &mut Model| {
            let mut d = Diagnostics::default();
            let base = resolve_pools(ctx, &m.base_pools, "base_pools", &mut d);
            let burst = resolve_pools(ctx, &m.burst_pools, "burst_pools", &mut d);
            if d.has_errors() {
                return Err(d);
            }
            m.max_hourly_cost_usd = match (base, burst) {
                (Some(base), Some(burst)) => {
                    let budget = m.budget.known().and_then(|b| b.max_hourly_usd.get());
                    max_hourly_cost(&base, &burst, budget).into()
                }
                _ => Attr::Unknown,
            };
            Ok(d)
        })?;
        remember(ctx, &planned.state);
        Ok(planned)
    }

    async fn apply(&self, ctx: &Ctx, prior: Value, planned: Value) -> Applied {
        let applied = records::apply(ctx, "policies", "burst policy", prior, planned);
        remember(ctx, &applied.state);
        applied
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let state = records::read(ctx, "policies", "burst policy", state)?;
        remember(ctx, &state);
        Ok(state)
    }

    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics> {
        records::import(ctx, "policies", self.type_name(), name, self.state_type())
    }
}

/// Refuses scaling windows the router would refuse, with its words: a panic window longer than
/// the stable window, windows outside 1s to 1h, a panic threshold outside 1.1 to 100.
fn check_windows(m: &Model, d: &mut Diagnostics) {
    let Some(up) = m.scale_up.known() else {
        return;
    };
    // A duration that does not parse has its own error from the schema's check; it stands aside
    // here so that no setting is reported twice.
    let text = |a: &Attr<String>| match a {
        Attr::Known(v) if humantime::parse_duration(v).is_err() => Some(None),
        Attr::Known(v) => Some(Some(v.clone())),
        Attr::Null => Some(None),
        _ => None,
    };
    let idle_for = m
        .scale_down
        .known()
        .map_or(Some(None), |down| text(&down.idle_for));
    let (Some(stable), Some(panic), Some(sustain), Some(idle_for)) = (
        text(&up.stable_window),
        text(&up.panic_window),
        text(&up.sustain),
        idle_for,
    ) else {
        return;
    };
    let panic_threshold = match &up.panic_threshold {
        Attr::Known(v) => Some(*v),
        Attr::Null => None,
        _ => return,
    };
    // Settings not given take the router's defaults.
    let default = ScaleUpSection::default();
    let section = ScaleUpSection {
        sustain: sustain.unwrap_or(default.sustain),
        stable_window: stable,
        panic_window: panic,
        panic_threshold,
        ..default
    };
    let idle_for = idle_for.unwrap_or_else(|| ScaleDownSection::default().idle_for);
    if let Err(e) = gpucap_fabric::config::check_scaling_windows(&section, &idle_for) {
        let attr = e.field.trim_start_matches("policy.");
        d.push(Diagnostic::attr_error(
            attr,
            "Invalid scaling setting",
            e.message,
        ));
    }
}

/// Lets the endpoints of this run resolve the policy by name.
fn remember(ctx: &Ctx, state: &Value) {
    if let Some(info) = BurstPolicyInfo::from_state(state) {
        ctx.registry.put_burst_policy(info);
    }
}

/// Resolves a list of pool names; `None` while the list is unknown. Unknown names are errors.
pub fn resolve_pools(
    ctx: &Ctx,
    names: &Names,
    attr: &str,
    d: &mut Diagnostics,
) -> Option<Vec<PoolInfo>> {
    let names = match names {
        Attr::Null => return Some(Vec::new()),
        names => names.all_known()?,
    };
    let mut out = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
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

fn max_hourly_cost(base: &[PoolInfo], burst: &[PoolInfo], budget: Option<f64>) -> Option<f64> {
    let costs = |pools: &[PoolInfo]| pools.iter().map(PoolInfo::cost).collect::<Vec<_>>();
    gpucap_policy::cost::policy_max_hourly(&costs(base), &costs(burst), budget)
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
