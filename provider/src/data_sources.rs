//! Data sources: the region table (`gpucap_regions`) and this host's devices
//! (`gpucap_local_devices`).

use async_trait::async_trait;

use crate::api::{Ctx, DataSource};
use crate::diag::Diagnostics;
use crate::models::data_sources::{self as model, Device, Region};
use crate::models::{self, Attr};
use crate::regions;
use crate::schema::Schema;
use crate::validate;
use crate::value::Value;

/// `gpucap_regions`
pub struct Regions;

#[async_trait]
impl DataSource for Regions {
    fn type_name(&self) -> &'static str {
        model::REGIONS
    }

    fn schema(&self) -> &'static Schema {
        model::regions_schema()
    }

    fn validate(&self, config: &Value) -> Diagnostics {
        let mut d = validate::schema(&self.schema().block, config);
        // The table decides which jurisdictions exist, so they are checked here, not declared.
        let known = regions::jurisdictions();
        validate::one_of(&mut d, "jurisdiction", config.get("jurisdiction"), &known);
        d
    }

    async fn read(&self, _ctx: &Ctx, config: Value) -> Result<Value, Diagnostics> {
        let mut m: model::Regions = models::decode(&config)?;
        let jurisdiction = m.jurisdiction.as_str();
        let cloud = m.cloud.as_str();
        let matching: Vec<&regions::Region> = regions::REGIONS
            .iter()
            .filter(|r| jurisdiction.is_none_or(|j| r.jurisdiction == j))
            .filter(|r| cloud.is_none_or(|c| r.provider == c))
            .collect();
        m.id = Attr::Known(format!(
            "{}/{}",
            cloud.unwrap_or("all"),
            jurisdiction.unwrap_or("all")
        ));
        m.names = Attr::Known(
            matching
                .iter()
                .map(|r| Attr::Known(r.name.into()))
                .collect(),
        );
        m.regions = Attr::Known(
            matching
                .iter()
                .map(|r| Region {
                    name: r.name.into(),
                    provider: r.provider.into(),
                    location: r.location.into(),
                    country: r.country.into(),
                    jurisdiction: r.jurisdiction.into(),
                })
                .collect(),
        );
        models::encode(&m, self.state_type())
    }
}

/// `gpucap_local_devices`
pub struct LocalDevices;

#[async_trait]
impl DataSource for LocalDevices {
    fn type_name(&self) -> &'static str {
        model::LOCAL_DEVICES
    }

    fn schema(&self) -> &'static Schema {
        model::local_devices_schema()
    }

    async fn read(&self, _ctx: &Ctx, config: Value) -> Result<Value, Diagnostics> {
        let devices = gpucap_fabric::driver::local::discover();
        let mut m: model::LocalDevices = models::decode(&config)?;
        m.id = Attr::Known("local".into());
        m.gpu_count = Attr::Known(devices.iter().filter(|d| d.kind == "cuda").count() as i64);
        m.devices = Attr::Known(
            devices
                .into_iter()
                .map(|d| Device {
                    id: d.id,
                    kind: d.kind,
                    name: d.name,
                    memory_mib: d.memory_mib as i64,
                    cores: d.cores as i64,
                })
                .collect(),
        );
        models::encode(&m, self.state_type())
    }
}
