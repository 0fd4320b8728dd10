//! Data sources: the region table (`gpucap_regions`), this host's devices
//! (`gpucap_local_devices`) and an endpoint's usage per API key (`gpucap_endpoint_usage`).

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

/// `gpucap_endpoint_usage`
pub struct EndpointUsage;

#[async_trait]
impl DataSource for EndpointUsage {
    fn type_name(&self) -> &'static str {
        model::ENDPOINT_USAGE
    }

    fn schema(&self) -> &'static Schema {
        model::endpoint_usage_schema()
    }

    async fn read(&self, ctx: &Ctx, config: Value) -> Result<Value, Diagnostics> {
        let mut m: model::EndpointUsage = models::decode(&config)?;
        let endpoint = m.endpoint.as_str().unwrap_or_default().to_string();
        let name = endpoint.as_str();
        let list = crate::resources::hosted::on_hosting_daemon(
            ctx,
            "did not report the endpoint's usage",
            |c| async move { c.key_usage(name).await },
        )
        .await?
        .ok_or_else(|| crate::resources::hosted::no_such_endpoint(&endpoint))?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        m.id = Attr::Known(endpoint);
        m.live = Attr::Known(list.live);
        m.replica_spend_usd = Attr::Known(list.replica_spend_usd);
        m.keys = Attr::Known(
            list.keys
                .into_iter()
                .map(|k| model::KeyUsage {
                    requests: count(k.requests),
                    rows: count(k.rows),
                    refusals: k.refusals.into_iter().map(|(r, n)| (r, count(n))).collect(),
                    spend_usd: k.spend_usd,
                    quota_used: count(k.quota_used),
                    monthly_request_quota: k.monthly_request_quota.map(count),
                    expires_at: k.expires_at,
                    name: k.name,
                })
                .collect(),
        );
        models::encode(&m, self.state_type())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::Harness;
    use crate::value::Value;

    fn read(h: &Harness, type_name: &str, config: serde_json::Value) -> Value {
        let ty = h.provider.data_source_type(type_name).unwrap();
        let config = Value::from_json(&config, ty).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(h.provider.read_data_source(type_name, config))
            .unwrap()
    }

    #[test]
    fn regions_filter_by_cloud_and_jurisdiction() {
        let h = Harness::new();
        let state = read(
            &h,
            "gpucap_regions",
            json!({"cloud": "aws", "jurisdiction": "EU"}),
        );
        assert_eq!(state.get("id").as_str(), Some("aws/EU"));
        let names: Vec<&str> = state
            .get("names")
            .as_list()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(names.contains(&"eu-central-1"), "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("eu-")), "{names:?}");
        let rows = state.get("regions").as_list().unwrap();
        assert_eq!(rows.len(), names.len());
        assert!(
            rows.iter()
                .all(|r| r.get("jurisdiction").as_str() == Some("EU"))
        );
    }

    #[test]
    fn an_unknown_jurisdiction_is_refused_with_the_known_ones() {
        let h = Harness::new();
        let ty = h.provider.data_source_type("gpucap_regions").unwrap();
        let config = Value::from_json(&json!({"jurisdiction": "XX"}), ty).unwrap();
        let d = h.provider.validate_data_source("gpucap_regions", &config);
        let text = crate::testing::errors(&d);
        assert!(text.contains("\"XX\" is not valid; use one of:"), "{text}");
        assert!(text.contains("EU"), "{text}");
    }

    #[test]
    fn local_devices_list_at_least_the_cpu() {
        let h = Harness::new();
        let state = read(&h, "gpucap_local_devices", json!({}));
        assert_eq!(state.get("id").as_str(), Some("local"));
        let devices = state.get("devices").as_list().unwrap();
        assert!(devices.iter().any(|d| d.get("id").as_str() == Some("cpu")));
    }
}
