//! `gpucap_inference_endpoint`'s schema and typed model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Attr, Names};
use crate::schema::{Block, Check, Mode, Schema, list_of_strings, map_of_strings};
use crate::value::Type;

/// The resource type's name.
pub const TYPE_NAME: &str = "gpucap_inference_endpoint";

/// Data classifications, least sensitive first.
pub const CLASSIFICATIONS: &[(&str, &str)] = &[
    ("public", ""),
    ("internal", ""),
    ("confidential", ""),
    ("pii", "personal data"),
];

/// An endpoint's configuration, plan or state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceEndpoint {
    /// The endpoint's name, as its id.
    pub id: Attr<String>,
    /// Its name.
    pub name: Attr<String>,
    /// The burst policy that places it.
    pub burst_policy: Attr<String>,
    /// Pools to run on without bursting.
    pub pools: Names,
    /// Free-form labels.
    pub labels: Attr<BTreeMap<String, Attr<String>>>,
    /// SHA-256 of the model file (computed).
    pub model_sha256: Attr<String>,
    /// The model's inputs and outputs (computed).
    pub model_signature: Attr<String>,
    /// The model's base URL (computed).
    pub url: Attr<String>,
    /// Where the router runs (computed).
    pub router_region: Attr<String>,
    /// Every region it can run in (computed).
    pub serving_regions: Names,
    /// Its pools in spill order (computed).
    pub spill_order: Names,
    /// Monthly cost at minimum (computed).
    pub monthly_cost_min_usd: Attr<f64>,
    /// Monthly cost at maximum (computed).
    pub monthly_cost_max_usd: Attr<f64>,
    /// Hash of the resolved placement (computed).
    pub placement_digest: Attr<String>,
    /// Replicas ready, as last read (computed).
    pub replicas_status: Attr<String>,
    /// Digest of the router config in force, as last read (computed).
    pub fabric_etag: Attr<String>,
    /// The model to serve.
    pub model: Attr<Model>,
    /// Dynamic batching.
    pub batching: Attr<Batching>,
    /// Replica bounds.
    pub replicas: Attr<Replicas>,
    /// What data it handles and where it may go.
    pub data_residency: Attr<DataResidency>,
    /// Where its router listens.
    pub listen: Attr<Listen>,
    /// Who may call it.
    pub auth: Attr<Auth>,
    /// TLS on its router's listener.
    pub tls: Attr<Tls>,
}

/// The `auth` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// `none` or `api_key`.
    pub mode: Attr<String>,
}

/// The `tls` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain (PEM).
    pub cert_file: Attr<String>,
    /// Its private key (PEM).
    pub key_file: Attr<String>,
    /// The CA clients' certificates must be signed by (mTLS).
    pub client_ca_file: Attr<String>,
}

/// `auth.mode` values.
pub const AUTH_MODES: &[(&str, &str)] = &[
    ("none", "anyone who reaches the listener may call"),
    ("api_key", "metadata and inference need a `gpucap_api_key`"),
];

/// The `model` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Model {
    /// The model file.
    pub path: Attr<String>,
    /// The version the endpoint reports.
    pub version: Attr<String>,
}

/// The `batching` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Batching {
    /// Rows per batch at most.
    pub max_batch_size: Attr<i64>,
    /// The longest, in microseconds, an idle backend holds a batch open for more requests.
    pub max_queue_delay_us: Attr<i64>,
    /// Requests that may wait.
    pub queue_capacity: Attr<i64>,
    /// Milliseconds a request may take.
    pub request_timeout_ms: Attr<i64>,
}

/// The `replicas` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Replicas {
    /// Replicas kept on the base pools.
    pub min: Attr<i64>,
    /// Most replicas.
    pub max: Attr<i64>,
}

/// The `data_residency` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataResidency {
    /// How sensitive the data is.
    pub classification: Attr<String>,
    /// Jurisdictions its pools must be in.
    pub allowed_jurisdictions: Names,
    /// Regions its pools must be in.
    pub allowed_regions: Names,
}

/// The `listen` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// Address to bind.
    pub host: Attr<String>,
    /// Port; 0 picks a free one.
    pub port: Attr<i64>,
}

/// The schema, built once per process.
pub fn schema() -> &'static Schema {
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
            .attr("monthly_cost_max_usd", Type::Number, Mode::Computed, "Cost per month of the most the endpoint's pools can hold at their prices (at most `replicas.max` replicas, dearest slots first), with burst spend capped by the budget.")
            .attr("model_signature", Type::String, Mode::Computed, "The model's inputs and outputs, read from the file at plan time: `name DATATYPE [shape]` each, `-1` for a dynamic dimension, e.g. `pixels FP32 [-1, 64] -> label INT64 [-1], probabilities FP32 [-1, 10]`.")
            .attr("placement_digest", Type::String, Mode::Computed, "Hash of the resolved pools and policy: a change to them shows as an in-place update of the endpoint.")
            .attr("replicas_status", Type::String, Mode::Computed, "Replicas ready by role, as the router reported when last read, e.g. `2 ready: base 1, burst 1`; `router not running (…)` when the router is down, which the next apply repairs.")
            .attr("fabric_etag", Type::String, Mode::Computed, "Digest of the router config in force, as the fabric reported it when last read. With a `fabric` daemon, the next apply sends it as `If-Match`, so a change another apply made in between is refused, not overwritten.")
            .single(
                "model",
                true,
                Block::new("The model to serve.")
                    .attr("path", Type::String, Mode::Required, "The model file, relative to the working directory or absolute: an ONNX graph (`.onnx`, served through ONNX Runtime) or a `.safetensors` file in gpucap's own format (see the runtime docs).")
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
                    .attr("max_queue_delay_us", Type::Number, Mode::OptionalComputed, "The longest, in microseconds, an idle backend holds a batch open for more requests; it starts at once when more are unlikely to come soon enough.")
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
            )
            .single(
                "auth",
                false,
                Block::new("Who may call the endpoint. With `mode = \"api_key\"`, metadata and inference need `Authorization: Bearer gpk_…` with one of the endpoint's `gpucap_api_key`s; liveness and readiness stay open for load balancers, and the router's operator routes (`/fabric/status`, `/fabric/targets`, `/metrics`) are served only on its operator listener (loopback). See the fabric-gateway guide.")
                    .attr("mode", Type::String, Mode::OptionalComputed, "`none` or `api_key`. `none` with a `listen.host` beyond loopback is a plan-time warning; an endpoint classified `pii` or `confidential` without a key is refused by the starter policy pack.")
                    .check("mode", Check::OneOf(AUTH_MODES))
                    .default_value("mode", json!("none")),
            )
            .single(
                "tls",
                false,
                Block::new("TLS on the router's listener (rustls); with `client_ca_file`, mTLS. The files are read on the router's host when it starts and again on every change of the endpoint or its keys; renewing a certificate in place needs no restart.")
                    .attr("cert_file", Type::String, Mode::Required, "The certificate chain (PEM), absolute.")
                    .attr("key_file", Type::String, Mode::Required, "Its private key (PEM), absolute.")
                    .attr("client_ca_file", Type::String, Mode::Optional, "Clients must present a certificate signed by this CA (PEM).")
            )
            .absent_means_defaults("auth")
            .absent_means_defaults("batching")
            .absent_means_defaults("replicas")
            .absent_means_defaults("data_residency")
            .absent_means_defaults("listen"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_model_holds_every_attribute() {
        super::super::tests::round_trips::<super::InferenceEndpoint>(super::schema());
    }
}
