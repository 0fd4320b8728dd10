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
    /// The `slurm` driver.
    pub slurm: Attr<Slurm>,
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

/// The `slurm` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slurm {
    /// `slurmrestd`'s base URL.
    pub rest_url: Attr<String>,
    /// The REST API's version.
    pub api_version: Attr<String>,
    /// The Slurm user jobs are submitted as.
    pub user: Attr<String>,
    /// A file holding that user's JWT.
    pub token_file: Attr<String>,
    /// The partition jobs go to.
    pub partition: Attr<String>,
    /// The account jobs are charged to.
    pub account: Attr<String>,
    /// The QOS jobs run under.
    pub qos: Attr<String>,
    /// Generic resources per job.
    pub gres: Attr<String>,
    /// Each job's time limit.
    pub time_limit: Attr<String>,
    /// How long before the time limit a replica is replaced.
    pub replace_before: Attr<String>,
    /// Whether the nodes read the model from its path.
    pub shared_model: Attr<bool>,
    /// The daemon's URL as the nodes reach it.
    pub join_url: Attr<String>,
    /// `gpucap-runtime` on the nodes.
    pub runtime_path: Attr<String>,
    /// The daemon's CA on the nodes.
    pub ca_cert: Attr<String>,
    /// The pool's jobs running (computed).
    pub running: Attr<i64>,
    /// The pool's jobs pending (computed).
    pub pending: Attr<i64>,
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
            .attr("join_token_sha256", list_of_strings(), Mode::Optional, "SHA-256 (hex) of each token the pool's machines join their router with (a `gpucap_join_token`'s `sha256`); two while one is rotated out. Required with `aws_autoscaling_group`; a `slurm` pool's router mints its own.")
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
            )
            .single(
                "slurm",
                false,
                Block::new("The `slurm` driver: each replica is a batch job in a partition of a Slurm cluster, reached through `slurmrestd`; the job's replica joins the router (see the fabric-slurm guide). Slurm stays the scheduler: jobs go through the partition's queue, account, QOS and limits, and gpucap submits and cancels only its own jobs. The REST token (a JWT for `user`) comes from `token_file`, else `SLURM_JWT` in the environment of Terraform and of the fabric daemon; it never enters state.")
                    .attr("rest_url", Type::String, Mode::Required, "`slurmrestd`'s base URL, e.g. `https://slurm.lab.example:6820`.")
                    .attr("partition", Type::String, Mode::Required, "The partition the jobs go to. Plan reads it: a partition the cluster does not have, a `gres` none of its nodes can satisfy, or `nodes.max` beyond the jobs it can hold at once is an error.")
                    .attr("account", Type::String, Mode::Optional, "The account the jobs are charged to (default: the user's default account).")
                    .attr("qos", Type::String, Mode::Optional, "The QOS the jobs run under (default: the association's).")
                    .attr("gres", Type::String, Mode::OptionalComputed, "The generic resources each job (one replica) asks for. Default: `gpu:<gpu.per_node>`, none for a CPU-only pool (`gpu.model = \"cpu\"`).")
                    .attr("time_limit", Type::String, Mode::Optional, "Each job's time limit, e.g. `24h` (default: the partition's); at most the partition's `MaxTime`. Jobs ask for SIGTERM before it (half of `replace_before`, at most two minutes), on which their replicas drain.")
                    .attr("replace_before", Type::String, Mode::Optional, "How long before `time_limit` a job's replica is replaced: its successor is submitted then, and it drains once the successor serves, so no request is refused. Default `10m` (half the job for limits under 20 minutes); shorter than `time_limit`.")
                    .attr("shared_model", Type::Bool, Mode::Optional, "Whether the endpoint's `model.path` is on a filesystem every node of the partition shares (NFS, Lustre, GPFS): the replicas then read it there, after checking its SHA-256 against the router's, instead of fetching it over their connection. Default: fetched (and cached on the node by digest).")
                    .attr("user", Type::String, Mode::OptionalComputed, "The Slurm user the jobs are submitted as (default: `USER` of the process Terraform runs in).")
                    .attr("token_file", Type::String, Mode::Optional, "A file holding the user's JWT (`scontrol token`), read by the provider at plan and by the fabric daemon for each call. Default: `SLURM_JWT`.")
                    .attr("api_version", Type::String, Mode::OptionalComputed, "The REST API's version (default `v0.0.38`, Slurm 22.05's). gpucap reads the answers of v0.0.38; later versions changed their shape and are not supported yet.")
                    .default_value("api_version", json!("v0.0.38"))
                    .attr("join_url", Type::String, Mode::Optional, "The fabric daemon's URL as the cluster's nodes reach it; the jobs' replicas join `JOIN_URL/v1/join/ENDPOINT`. Default: the daemon's address (the `fabric` block's, or this host's embedded daemon).")
                    .attr("runtime_path", Type::String, Mode::Optional, "`gpucap-runtime` on the nodes (default: the daemon's own runtime path, for clusters that share it).")
                    .attr("ca_cert", Type::String, Mode::Optional, "The CA the replicas verify the daemon with, as a path on the nodes (when the daemon's certificate is not publicly trusted).")
                    .attr("running", Type::Number, Mode::Computed, "The pool's jobs Slurm reports running, as last read.")
                    .attr("pending", Type::Number, Mode::Computed, "The pool's jobs Slurm reports pending (replicas waiting in the queue), as last read."),
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
