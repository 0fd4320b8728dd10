//! The data sources' schemas and typed models: `gpucap_regions`, `gpucap_local_devices` and
//! `gpucap_endpoint_usage`.

use serde::{Deserialize, Serialize};

use super::{Attr, Names};
use crate::schema::{Block, Check, Mode, Schema};
use crate::value::Type;

/// `gpucap_regions`' name.
pub const REGIONS: &str = "gpucap_regions";
/// `gpucap_local_devices`' name.
pub const LOCAL_DEVICES: &str = "gpucap_local_devices";
/// `gpucap_endpoint_usage`'s name.
pub const ENDPOINT_USAGE: &str = "gpucap_endpoint_usage";

/// `gpucap_endpoint_usage`: an endpoint's usage per API key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointUsage {
    /// The endpoint's name.
    pub id: Attr<String>,
    /// The endpoint.
    pub endpoint: Attr<String>,
    /// Whether the figures are the router's.
    pub live: Attr<bool>,
    /// Every replica's cost since the router started.
    pub replica_spend_usd: Attr<f64>,
    /// Each key.
    pub keys: Attr<Vec<KeyUsage>>,
}

/// One key's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUsage {
    /// The key's name.
    pub name: String,
    /// Requests admitted.
    pub requests: i64,
    /// Rows in them.
    pub rows: i64,
    /// Refusals by reason.
    pub refusals: std::collections::BTreeMap<String, i64>,
    /// Attributed spend.
    pub spend_usd: f64,
    /// Counted against the quota this month.
    pub quota_used: i64,
    /// The quota.
    pub monthly_request_quota: Option<i64>,
    /// The expiry.
    pub expires_at: Option<String>,
}

/// `gpucap_regions`: its filters and the matching regions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Regions {
    /// The filters, as an id.
    pub id: Attr<String>,
    /// Only regions in this jurisdiction.
    pub jurisdiction: Attr<String>,
    /// Only regions of this cloud.
    pub cloud: Attr<String>,
    /// The matching region names.
    pub names: Names,
    /// The matching regions.
    pub regions: Attr<Vec<Region>>,
}

/// One row of the region table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// The region's name.
    pub name: String,
    /// The cloud.
    pub provider: String,
    /// Where it is.
    pub location: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Its jurisdiction.
    pub jurisdiction: String,
}

/// `gpucap_local_devices`: this host's devices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalDevices {
    /// A fixed id.
    pub id: Attr<String>,
    /// Number of CUDA devices.
    pub gpu_count: Attr<i64>,
    /// Each device.
    pub devices: Attr<Vec<Device>>,
}

/// One device of this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// `cpu` or `cuda:N`.
    pub id: String,
    /// `cpu` or `cuda`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// Cores (CPU threads, or CUDA multiprocessors).
    pub cores: i64,
}

fn object(fields: &[(&str, Type)]) -> Type {
    Type::Object(
        fields
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect(),
    )
}

/// `gpucap_regions`' schema, built once per process.
pub fn regions_schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let region = object(&[
            ("name", Type::String),
            ("provider", Type::String),
            ("location", Type::String),
            ("country", Type::String),
            ("jurisdiction", Type::String),
        ]);
        Schema {
            version: 0,
            block: Block::new("The built-in table of cloud regions with their country and jurisdiction, the table pools derive `jurisdiction` from.")
                .attr("id", Type::String, Mode::Computed, "A fixed id.")
                .attr("jurisdiction", Type::String, Mode::Optional, "Only regions in this jurisdiction, e.g. `EU`.")
                .attr("cloud", Type::String, Mode::Optional, "Only regions of this cloud.")
                .check("cloud", Check::OneOf(&[("aws", ""), ("gcp", ""), ("azure", "")]))
                .attr("names", Type::List(Box::new(Type::String)), Mode::Computed, "The matching region names, in table order.")
                .attr("regions", Type::List(Box::new(region)), Mode::Computed, "The matching regions: `name`, `provider` (the cloud), `location`, `country` (ISO 3166-1 alpha-2) and `jurisdiction`."),
        }
    })
}

/// `gpucap_local_devices`' schema, built once per process.
pub fn local_devices_schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| Schema {
        version: 0,
        block: Block::new("The compute devices of the host Terraform runs on: what a `local` pool can use.")
            .attr("id", Type::String, Mode::Computed, "A fixed id.")
            .attr("gpu_count", Type::Number, Mode::Computed, "Number of CUDA devices.")
            .attr(
                "devices",
                Type::List(Box::new(object(&[
                    ("id", Type::String),
                    ("kind", Type::String),
                    ("name", Type::String),
                    ("memory_mib", Type::Number),
                    ("cores", Type::Number),
                ]))),
                Mode::Computed,
                "Each device: `id` (`cpu` or `cuda:N`, as `local.devices` names it), `kind`, `name`, `memory_mib` and `cores`.",
            ),
    })
}

/// `gpucap_endpoint_usage`'s schema, built once per process.
pub fn endpoint_usage_schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| Schema {
        version: 0,
        block: Block::new("An endpoint's usage per API key, from its router (through the fabric daemon hosting it), for chargeback: requests, rows, refusals, the share of the endpoint's replica spend each key's rows account for, and quota use. Counts run from the router's start, except `quota_used`, which counts the calendar month (UTC) across restarts.")
            .attr("id", Type::String, Mode::Computed, "The endpoint's name.")
            .attr("endpoint", Type::String, Mode::Required, "The endpoint's name.")
            .check("endpoint", Check::Name)
            .attr("live", Type::Bool, Mode::Computed, "Whether the figures are the router's; false (and the figures zero) while it does not answer or the endpoint needs no keys.")
            .attr("replica_spend_usd", Type::Number, Mode::Computed, "What every replica of the endpoint (base and burst) cost since its router started, USD: the whole the keys' `spend_usd` are shares of (spend in rounds without keyed requests is attributed to no key).")
            .attr(
                "keys",
                Type::List(Box::new(object(&[
                    ("name", Type::String),
                    ("requests", Type::Number),
                    ("rows", Type::Number),
                    ("refusals", Type::Map(Box::new(Type::Number))),
                    ("spend_usd", Type::Number),
                    ("quota_used", Type::Number),
                    ("monthly_request_quota", Type::Number),
                    ("expires_at", Type::String),
                ]))),
                Mode::Computed,
                "Each key by name: `requests` and `rows` admitted, `refusals` by reason (`expired`, `rate`, `rows_rate`, `quota`), `spend_usd` (its share of the replica spend, by the rows it sent each second), `quota_used` this month, `monthly_request_quota` and `expires_at` (null when unset).",
            ),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_models_hold_every_attribute() {
        super::super::tests::round_trips::<super::EndpointUsage>(super::endpoint_usage_schema());
        super::super::tests::round_trips::<super::Regions>(super::regions_schema());
        super::super::tests::round_trips::<super::LocalDevices>(super::local_devices_schema());
    }
}
