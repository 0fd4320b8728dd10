//! `gpucap_burst_policy`'s schema and typed model.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Attr, Names};
use crate::schema::{Block, Check, Mode, Schema, list_of_strings};
use crate::value::Type;

/// The resource type's name.
pub const TYPE_NAME: &str = "gpucap_burst_policy";

/// A burst policy's configuration, plan or state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BurstPolicy {
    /// The policy's name, as its id.
    pub id: Attr<String>,
    /// Its name.
    pub name: Attr<String>,
    /// Pools that carry the baseline, in order.
    pub base_pools: Names,
    /// Pools load spills to.
    pub burst_pools: Names,
    /// `ordered` or `cheapest`.
    pub placement: Attr<String>,
    /// `none` or `on_demand`.
    pub spot_fallback: Attr<String>,
    /// Whether burst replicas are started ahead of predicted load.
    pub predictive: Attr<bool>,
    /// The most the policy can spend per hour (computed).
    pub max_hourly_cost_usd: Attr<f64>,
    /// When to add burst capacity.
    pub scale_up: Attr<ScaleUp>,
    /// When to release it.
    pub scale_down: Attr<ScaleDown>,
    /// The cap on burst spend.
    pub budget: Attr<Budget>,
}

/// The `scale_up` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleUp {
    /// Requests waiting per replica.
    pub queue_depth: Attr<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_latency_ms: Attr<f64>,
    /// Busy fraction of the devices.
    pub gpu_utilization: Attr<f64>,
    /// How long demand must hold before the fleet grows (`for`).
    #[serde(rename = "for")]
    pub sustain: Attr<String>,
    /// The window demand is averaged over for the count kept.
    pub stable_window: Attr<String>,
    /// The window demand is averaged over for growth and panics.
    pub panic_window: Attr<String>,
    /// Panic at this multiple of the serving replicas.
    pub panic_threshold: Attr<f64>,
}

/// The `scale_down` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleDown {
    /// Idle time before a burst replica is released.
    pub idle_for: Attr<String>,
    /// Replicas kept warm.
    pub min_warm_replicas: Attr<i64>,
    /// How long a replica may take to finish what it accepted.
    pub drain_timeout: Attr<String>,
}

/// The `budget` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// USD per hour burst capacity may cost.
    pub max_hourly_usd: Attr<f64>,
    /// `queue` or `reject`.
    pub on_exhausted: Attr<String>,
}

/// The schema, built once per process.
pub fn schema() -> &'static Schema {
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
                Block::new("When to add capacity. Each signal turns the endpoint's total demand into a replica count, `ceil(demand / per-replica target)`; the fleet grows to the largest once it has held for `for`, or at once when it panics (see the fabric configuration guide).")
                    .attr("queue_depth", Type::Number, Mode::Optional, "Requests a replica holds, in its batch or waiting: the router spills to the next replica beyond it, and the fleet keeps the replicas the arrival rate needs at it.")
                    .check("queue_depth", Check::IntIn(1, 1_000_000))
                    .attr("p99_latency_ms", Type::Number, Mode::Optional, "99th percentile latency in milliseconds: becomes the requests a replica can hold and still answer within it, through its measured pass times.")
                    .check("p99_latency_ms", Check::IntIn(1, 3_600_000))
                    .attr("gpu_utilization", Type::Number, Mode::Optional, "Busy fraction per replica.")
                    .check("gpu_utilization", Check::Fraction)
                    .attr("for", Type::String, Mode::OptionalComputed, "How long demand must hold before the fleet grows for it; at most 1h.")
                    .check("for", Check::Duration)
                    .default_value("for", json!("1m"))
                    .attr("stable_window", Type::String, Mode::Optional, "Demand averaged over this holds the replicas that run; from 1s to 1h, default `60s`.")
                    .check("stable_window", Check::Duration)
                    .attr("panic_window", Type::String, Mode::Optional, "Demand averaged over this decides growth and panics; from 1s to `stable_window`, default `6s`.")
                    .check("panic_window", Check::Duration)
                    .attr("panic_threshold", Type::Number, Mode::Optional, "Grow at once, without waiting for `for`, when the panic window's demand needs this many times the serving replicas; from 1.1 to 100, default 2."),
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
            .absent_means_defaults("scale_up")
            .absent_means_defaults("scale_down")
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_model_holds_every_attribute() {
        super::super::tests::round_trips::<super::BurstPolicy>(super::schema());
    }
}
