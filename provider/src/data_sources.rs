//! Data sources: the region table (`gpucap_regions`) and this host's devices
//! (`gpucap_local_devices`).

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::api::{Ctx, DataSource};
use crate::diag::Diagnostics;
use crate::regions;
use crate::schema::{Block, Check, Mode, Schema};
use crate::validate;
use crate::value::{Type, Value};

fn object(fields: &[(&str, Type)]) -> Type {
    Type::Object(
        fields
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect(),
    )
}

fn region_type() -> Type {
    object(&[
        ("name", Type::String),
        ("provider", Type::String),
        ("location", Type::String),
        ("country", Type::String),
        ("jurisdiction", Type::String),
    ])
}

/// `gpucap_regions`
pub struct Regions;

#[async_trait]
impl DataSource for Regions {
    fn type_name(&self) -> &'static str {
        "gpucap_regions"
    }

    fn schema(&self) -> &'static Schema {
        static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| Schema {
            version: 0,
            block: Block::new("The built-in table of cloud regions with their country and jurisdiction, the table pools derive `jurisdiction` from.")
                .attr("id", Type::String, Mode::Computed, "A fixed id.")
                .attr("jurisdiction", Type::String, Mode::Optional, "Only regions in this jurisdiction, e.g. `EU`.")
                .attr("cloud", Type::String, Mode::Optional, "Only regions of this cloud.")
                .check("cloud", Check::OneOf(&[("aws", ""), ("gcp", ""), ("azure", "")]))
                .attr("names", Type::List(Box::new(Type::String)), Mode::Computed, "The matching region names, in table order.")
                .attr("regions", Type::List(Box::new(region_type())), Mode::Computed, "The matching regions: `name`, `provider` (the cloud), `location`, `country` (ISO 3166-1 alpha-2) and `jurisdiction`."),
        })
    }

    fn validate(&self, config: &Value) -> Diagnostics {
        let mut d = validate::schema(&self.schema().block, config);
        // The table decides which jurisdictions exist, so they are checked here, not declared.
        let known = regions::jurisdictions();
        validate::one_of(&mut d, "jurisdiction", config.get("jurisdiction"), &known);
        d
    }

    async fn read(&self, _ctx: &Ctx, config: Value) -> Result<Value, Diagnostics> {
        let jurisdiction = config.get("jurisdiction").as_str();
        let cloud = config.get("cloud").as_str();
        let matching: Vec<&regions::Region> = regions::REGIONS
            .iter()
            .filter(|r| jurisdiction.is_none_or(|j| r.jurisdiction == j))
            .filter(|r| cloud.is_none_or(|c| r.provider == c))
            .collect();
        let mut state = config.clone();
        state.set(
            "id",
            Value::String(format!(
                "{}/{}",
                cloud.unwrap_or("all"),
                jurisdiction.unwrap_or("all")
            )),
        );
        state.set(
            "names",
            Value::List(
                matching
                    .iter()
                    .map(|r| Value::String(r.name.into()))
                    .collect(),
            ),
        );
        state.set(
            "regions",
            Value::List(
                matching
                    .iter()
                    .map(|r| {
                        Value::Map(BTreeMap::from([
                            ("name".into(), Value::String(r.name.into())),
                            ("provider".into(), Value::String(r.provider.into())),
                            ("location".into(), Value::String(r.location.into())),
                            ("country".into(), Value::String(r.country.into())),
                            ("jurisdiction".into(), Value::String(r.jurisdiction.into())),
                        ]))
                    })
                    .collect(),
            ),
        );
        Ok(state)
    }
}

/// `gpucap_local_devices`
pub struct LocalDevices;

#[async_trait]
impl DataSource for LocalDevices {
    fn type_name(&self) -> &'static str {
        "gpucap_local_devices"
    }

    fn schema(&self) -> &'static Schema {
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

    async fn read(&self, _ctx: &Ctx, config: Value) -> Result<Value, Diagnostics> {
        let devices = gpucap_fabric::driver::local::discover();
        let mut state = config.clone();
        state.set("id", Value::String("local".into()));
        state.set(
            "gpu_count",
            Value::Int(devices.iter().filter(|d| d.kind == "cuda").count() as i64),
        );
        state.set(
            "devices",
            Value::List(
                devices
                    .into_iter()
                    .map(|d| {
                        Value::Map(BTreeMap::from([
                            ("id".into(), Value::String(d.id)),
                            ("kind".into(), Value::String(d.kind)),
                            ("name".into(), Value::String(d.name)),
                            ("memory_mib".into(), Value::Int(d.memory_mib as i64)),
                            ("cores".into(), Value::Int(d.cores as i64)),
                        ]))
                    })
                    .collect(),
            ),
        );
        Ok(state)
    }
}
