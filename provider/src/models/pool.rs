//! `gpucap_gpu_pool`'s schema and typed model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Attr, Names};
use crate::schema::{Block, Check, Mode, Schema, list_of_strings, map_of_strings};
use crate::value::Type;

/// The resource type's name.
pub const TYPE_NAME: &str = "gpucap_gpu_pool";

/// Capacity types, cheapest commitment last.
pub const CAPACITY_TYPES: &[(&str, &str)] = &[
    ("on_prem", "owned"),
    ("reserved", "committed cloud capacity"),
    ("on_demand", ""),
    ("spot", "reclaimable"),
];

/// A pool's configuration, plan or state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuPool {
    /// The pool's name, as its id.
    pub id: Attr<String>,
    /// Its name.
    pub name: Attr<String>,
    /// Where the capacity is.
    pub region: Attr<String>,
    /// The region's legal jurisdiction.
    pub jurisdiction: Attr<String>,
    /// `on_prem`, `reserved`, `on_demand` or `spot`.
    pub capacity_type: Attr<String>,
    /// USD per GPU-hour as stated.
    pub price_per_gpu_hour: Attr<f64>,
    /// The price the cost attributes use (computed).
    pub effective_price_per_gpu_hour: Attr<f64>,
    /// Where that price comes from (computed).
    pub price_source: Attr<String>,
    /// `dedicated` or `shared`.
    pub tenancy: Attr<String>,
    /// Free-form labels.
    pub labels: Attr<BTreeMap<String, Attr<String>>>,
    /// GPUs at minimum size (computed).
    pub gpus_min: Attr<i64>,
    /// GPUs at maximum size (computed).
    pub gpus_max: Attr<i64>,
    /// Cost per hour at minimum size (computed).
    pub hourly_cost_min_usd: Attr<f64>,
    /// Cost per hour at maximum size (computed).
    pub hourly_cost_max_usd: Attr<f64>,
    /// Devices the driver found (computed).
    pub devices: Names,
    /// The accelerator each node has.
    pub gpu: Attr<Gpu>,
    /// Node bounds.
    pub nodes: Attr<Nodes>,
    /// The `local` driver.
    pub local: Attr<Local>,
    /// The `aws_autoscaling_group` driver.
    pub aws_autoscaling_group: Attr<AwsGroup>,
    /// SHA-256 (hex) of the tokens the pool's machines join with.
    pub join_token_sha256: Names,
}

/// The `gpu` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gpu {
    /// The GPU model, or `cpu`.
    pub model: Attr<String>,
    /// GPUs per node.
    pub per_node: Attr<i64>,
    /// Memory per GPU in GiB.
    pub memory_gib: Attr<f64>,
}

/// The `nodes` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nodes {
    /// Fewest nodes.
    pub min: Attr<i64>,
    /// Most nodes.
    pub max: Attr<i64>,
}

/// The `local` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Local {
    /// `auto`, `cpu` or CUDA devices.
    pub devices: Attr<String>,
}

/// The `aws_autoscaling_group` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsGroup {
    /// The group's name.
    pub name: Attr<String>,
    /// Its `MinSize` (computed).
    pub min_size: Attr<i64>,
    /// Its `MaxSize` (computed).
    pub max_size: Attr<i64>,
    /// Its `DesiredCapacity` (computed).
    pub desired_capacity: Attr<i64>,
    /// Its instances in service (computed).
    pub in_service: Attr<i64>,
}

/// The schema, built once per process.
pub fn schema() -> &'static Schema {
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
            .attr("join_token_sha256", list_of_strings(), Mode::Optional, "SHA-256 (hex) of each token the pool's machines join their router with (a `gpucap_join_token`'s `sha256`); two while one is rotated out. Required with `aws_autoscaling_group`.")
            .single(
                "local",
                false,
                Block::new("The `local` driver: the pool is this host's devices.")
                    .attr("devices", Type::String, Mode::OptionalComputed, "`auto` (the GPUs if any, else the CPU), `cpu`, or CUDA devices such as `cuda:0,cuda:1`.")
                    .default_value("devices", json!("auto")),
            )
            .single(
                "aws_autoscaling_group",
                false,
                Block::new("The `aws_autoscaling_group` driver: replicas run on the instances of an existing EC2 Auto Scaling group in the pool's `region`, which join the router (see the fabric-aws guide). gpucap only steers its desired capacity and scale-in protection; the group, its launch template and its bounds stay the AWS provider's.")
                    .attr("name", Type::String, Mode::Required, "The group's name.")
                    .attr("min_size", Type::Number, Mode::Computed, "The group's `MinSize`, as last read.")
                    .attr("max_size", Type::Number, Mode::Computed, "The group's `MaxSize`, as last read.")
                    .attr("desired_capacity", Type::Number, Mode::Computed, "The group's `DesiredCapacity`, as last read.")
                    .attr("in_service", Type::Number, Mode::Computed, "The group's instances in service, as last read."),
            ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_model_holds_every_attribute() {
        super::super::tests::round_trips::<super::GpuPool>(super::schema());
    }
}
