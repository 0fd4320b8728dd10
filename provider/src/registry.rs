//! Names resolved at plan time. Endpoints name their burst policy and policies name their pools;
//! ids are unknown until apply but names are known, so the provider remembers every pool and policy
//! it planned, read or applied in this process and resolves names against them, falling back to the
//! records the drivers keep for objects outside this run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use gpucap_fabric::config::{
    AwsGroupSection, BudgetSection, LocalSection, PolicySection, PoolSection, ScaleDownSection,
    ScaleUpSection, SlurmSection,
};
use gpucap_policy::gpucap::placement::{BurstOrder, PlacedPool, PolicyPools};
use serde::{Deserialize, Serialize};

use crate::models::{self, Attr, Names, burst_policy, pool};
use crate::value::Value;
use gpucap_fabric::store;

/// What the rest of the run needs to know about a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its jurisdiction (derived or stated).
    pub jurisdiction: String,
    /// `on_prem`, `reserved`, `on_demand` or `spot`.
    pub capacity_type: String,
    /// `dedicated` or `shared`.
    pub tenancy: String,
    /// The GPU model (`cpu` for CPU-only pools).
    pub gpu_model: String,
    /// GPUs at minimum size.
    pub gpus_min: i64,
    /// GPUs at maximum size.
    pub gpus_max: i64,
    /// USD per GPU-hour the cost model uses (stated or from the catalog), when known.
    pub price_per_gpu_hour: Option<f64>,
    /// The `local` driver's device list, when the pool uses it.
    pub local_devices: Option<String>,
    /// The Auto Scaling group, when the pool uses the `aws_autoscaling_group` driver. (Absent
    /// fields are not serialized, so pools of earlier releases keep their placement digest.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_group: Option<String>,
    /// The Slurm partition, when the pool uses the `slurm` driver: its table as the fabric takes
    /// it, except that `join_url` holds the daemon's URL as the nodes reach it (empty for the
    /// daemon's own address) until an endpoint's router config resolves it ([`Self::to_section`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSection>,
    /// SHA-256 of the tokens its machines join with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_token_sha256: Vec<String>,
    /// The whole object (unknowns as null), as policy rules read it in `pools`. Not serialized:
    /// the placement digest hashes the fields above, and attributes that only become known at
    /// apply (the id) must not change it between plan and apply.
    #[serde(skip)]
    pub object: serde_json::Value,
}

impl PoolInfo {
    /// The pool's figures for the cost model (its price is already resolved).
    pub fn cost(&self) -> gpucap_policy::cost::PoolCost {
        gpucap_policy::cost::PoolCost {
            usd_per_gpu_hour: self.price_per_gpu_hour,
            source: gpucap_policy::cost::PriceSource::Stated,
            gpus_min: self.gpus_min,
            gpus_max: self.gpus_max,
        }
    }

    /// The pool as the fabric's router config lists it, as a base or burst pool of an endpoint
    /// deployed to `site`; `None` without a driver the fabric has.
    pub fn to_section(&self, burst: bool, site: &RouterSite) -> Option<PoolSection> {
        let (local, aws_autoscaling_group, slurm) =
            match (&self.local_devices, &self.aws_group, &self.slurm) {
                (Some(devices), _, _) => (
                    Some(LocalSection {
                        devices: devices.clone(),
                        runtime_path: None,
                    }),
                    None,
                    None,
                ),
                (None, Some(group), _) => (
                    None,
                    Some(AwsGroupSection {
                        name: group.clone(),
                        profile: site.aws.profile.clone(),
                        endpoint_url: site.aws.endpoint_url.clone(),
                        join_timeout: None,
                    }),
                    None,
                ),
                (None, None, Some(slurm)) => {
                    let base = match slurm.join_url.trim_end_matches('/') {
                        "" => site.daemon_url.trim_end_matches('/'),
                        url => url,
                    };
                    let join_url = format!("{base}/v1/join/{}", site.endpoint);
                    (
                        None,
                        None,
                        Some(SlurmSection {
                            join_url,
                            ..slurm.clone()
                        }),
                    )
                }
                (None, None, None) => return None,
            };
        Some(PoolSection {
            name: self.name.clone(),
            role: if burst { "burst" } else { "base" }.to_string(),
            region: self.region.clone(),
            jurisdiction: self.jurisdiction.clone(),
            capacity_type: self.capacity_type.clone(),
            price_per_gpu_hour: self.price_per_gpu_hour,
            gpus_max: usize::try_from(self.gpus_max).ok()?,
            local,
            aws_autoscaling_group,
            slurm,
            join_token_sha256: self.join_token_sha256.clone(),
        })
    }

    /// From a pool's planned or stored state; `None` while something needed is unknown.
    pub fn from_state(v: &Value) -> Option<PoolInfo> {
        let m: pool::GpuPool = models::decode_effective(&pool::schema().block, v).ok()?;
        let text = |a: &Attr<String>| a.known().cloned();
        Some(PoolInfo {
            name: text(&m.name)?,
            region: text(&m.region)?,
            jurisdiction: text(&m.jurisdiction)?,
            capacity_type: text(&m.capacity_type)?,
            tenancy: text(&m.tenancy)?,
            gpu_model: text(&m.gpu.known()?.model)?,
            gpus_min: m.gpus_min.get()?,
            gpus_max: m.gpus_max.get()?,
            price_per_gpu_hour: m.effective_price_per_gpu_hour.get(),
            local_devices: m.local.known().and_then(|l| text(&l.devices)),
            aws_group: m.aws_autoscaling_group.known().and_then(|g| text(&g.name)),
            slurm: match &m.slurm {
                Attr::Known(block) => Some(slurm_section(block)?),
                _ => None,
            },
            join_token_sha256: m
                .join_token_sha256
                .known()
                .map(|v| v.iter().filter_map(text).collect())
                .unwrap_or_default(),
            object: v.to_json_unknown_as_null(),
        })
    }
}

/// Where an endpoint's router runs, as its pools' sections need it.
#[derive(Debug, Clone)]
pub struct RouterSite<'a> {
    /// The endpoint's name.
    pub endpoint: &'a str,
    /// How pools on AWS are reached.
    pub aws: &'a crate::aws::AwsSettings,
    /// The daemon hosting the router (its admin API, which also takes joins).
    pub daemon_url: &'a str,
}

/// A `slurm` block as the fabric's table ([`PoolInfo::slurm`]); `None` while something is
/// unknown.
fn slurm_section(b: &pool::Slurm) -> Option<SlurmSection> {
    let optional = |a: &Attr<String>| match a {
        Attr::Unknown => None,
        a => Some(a.as_str().map(str::to_string)),
    };
    let path = |a: &Attr<String>| optional(a).map(|v| v.map(std::path::PathBuf::from));
    Some(SlurmSection {
        rest_url: b.rest_url.known()?.clone(),
        api_version: optional(&b.api_version)?,
        user: optional(&b.user)?,
        token_file: path(&b.token_file)?,
        partition: b.partition.known()?.clone(),
        account: optional(&b.account)?,
        qos: optional(&b.qos)?,
        gres: optional(&b.gres)?,
        time_limit: optional(&b.time_limit)?,
        join_url: optional(&b.join_url)?.unwrap_or_default(),
        join_token_file: None,
        ca_cert: path(&b.ca_cert)?,
        runtime_path: path(&b.runtime_path)?,
        device: None,
        threads: None,
        work_dir: None,
        queue_timeout: None,
        join_timeout: None,
        replace_before: optional(&b.replace_before)?,
        shared_model: match b.shared_model {
            Attr::Unknown => return None,
            Attr::Known(v) => Some(v),
            _ => None,
        },
    })
}

impl PlacedPool for PoolInfo {
    fn pool_name(&self) -> &str {
        &self.name
    }
    fn pool_region(&self) -> &str {
        &self.region
    }
    fn pool_jurisdiction(&self) -> &str {
        &self.jurisdiction
    }
    fn pool_price(&self) -> Option<f64> {
        self.price_per_gpu_hour
    }
}

/// What the rest of the run needs to know about a burst policy: its pools, and how the fabric's
/// router scales by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurstPolicyInfo {
    /// Its name.
    pub name: String,
    /// Baseline pools, in order.
    pub base_pools: Vec<String>,
    /// Burst pools, as listed.
    pub burst_pools: Vec<String>,
    /// `ordered` or `cheapest`.
    pub placement: String,
    /// Scaling, budget and fallback, in the router config's form.
    pub section: PolicySection,
    /// The whole object (unknowns as null), as policy rules read it in `policy`. Not serialized,
    /// for the same reason as [`PoolInfo::object`].
    #[serde(skip)]
    pub object: serde_json::Value,
}

impl BurstPolicyInfo {
    /// From a policy's planned or stored state; `None` while something needed is unknown. Unset
    /// settings take the schema's defaults.
    pub fn from_state(v: &Value) -> Option<BurstPolicyInfo> {
        let m: burst_policy::BurstPolicy =
            models::decode_effective(&burst_policy::schema().block, v).ok()?;
        let names = |n: &Names| -> Option<Vec<String>> {
            match n {
                Attr::Null => Some(Vec::new()),
                n => Some(n.all_known()?.into_iter().cloned().collect()),
            }
        };
        let number = |a: &Attr<f64>| -> Option<Option<f64>> {
            match a {
                Attr::Unknown => None,
                a => Some(a.get()),
            }
        };
        let text = |a: &Attr<String>| a.known().cloned();
        let up = m.scale_up.known()?;
        let down = m.scale_down.known()?;
        let budget = match &m.budget {
            Attr::Null => None,
            b => {
                let b = b.known()?;
                Some(BudgetSection {
                    max_hourly_usd: b.max_hourly_usd.get()?,
                    on_exhausted: text(&b.on_exhausted)?,
                })
            }
        };
        let name = text(&m.name)?;
        Some(BurstPolicyInfo {
            base_pools: names(&m.base_pools)?,
            burst_pools: names(&m.burst_pools)?,
            placement: text(&m.placement)?,
            section: PolicySection {
                name: name.clone(),
                spot_fallback: text(&m.spot_fallback)?,
                scale_up: ScaleUpSection {
                    queue_depth: number(&up.queue_depth)?,
                    p99_latency_ms: number(&up.p99_latency_ms)?,
                    gpu_utilization: number(&up.gpu_utilization)?,
                    sustain: text(&up.sustain)?,
                    stable_window: up.stable_window.known().cloned(),
                    panic_window: up.panic_window.known().cloned(),
                    panic_threshold: up.panic_threshold.get(),
                },
                scale_down: ScaleDownSection {
                    idle_for: text(&down.idle_for)?,
                    min_warm_replicas: usize::try_from(down.min_warm_replicas.get()?).ok()?,
                    drain_timeout: text(&down.drain_timeout)?,
                },
                budget,
                predictive: m.predictive.get()?,
            },
            name,
            object: v.to_json_unknown_as_null(),
        })
    }

    /// How long a replica may take to finish what it accepted before it is stopped.
    pub fn drain_timeout(&self) -> std::time::Duration {
        humantime::parse_duration(&self.section.scale_down.drain_timeout)
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// The budget's cap, when there is one.
    pub fn budget_max_hourly_usd(&self) -> Option<f64> {
        self.section.budget.as_ref().map(|b| b.max_hourly_usd)
    }

    /// The policy's pool names and burst order, for placement.
    pub fn pools(&self) -> PolicyPools {
        PolicyPools {
            base: self.base_pools.clone(),
            burst: self.burst_pools.clone(),
            order: BurstOrder::parse(Some(&self.placement)),
        }
    }
}

/// The run-wide registry.
#[derive(Default)]
pub struct Registry {
    pools: Mutex<BTreeMap<String, PoolInfo>>,
    burst_policies: Mutex<BTreeMap<String, BurstPolicyInfo>>,
    /// Endpoint name → (its base pools, its minimum replicas), for the capacity guarantee.
    demand: Mutex<BTreeMap<String, (Vec<String>, i64)>>,
}

impl Registry {
    /// Remembers a pool.
    pub fn put_pool(&self, p: PoolInfo) {
        lock(&self.pools).insert(p.name.clone(), p);
    }

    /// Remembers a burst policy.
    pub fn put_burst_policy(&self, p: BurstPolicyInfo) {
        lock(&self.burst_policies).insert(p.name.clone(), p);
    }

    /// Records an endpoint's baseline demand and returns the total minimum replicas of every endpoint
    /// known in this run that shares a base pool with it, including itself.
    pub fn put_demand(&self, endpoint: &str, base_pools: Vec<String>, min: i64) -> i64 {
        let mut demand = lock(&self.demand);
        let mine = base_pools.clone();
        demand.insert(endpoint.to_string(), (base_pools, min));
        demand
            .values()
            .filter(|(pools, _)| pools.iter().any(|p| mine.contains(p)))
            .map(|(_, m)| m)
            .sum()
    }

    /// A pool by name: from this run, else from the drivers' records in `state_dir`.
    pub fn pool(&self, state_dir: &Path, name: &str) -> Option<PoolInfo> {
        if let Some(p) = lock(&self.pools).get(name) {
            return Some(p.clone());
        }
        let path = store::kind_dir(state_dir, "pools").join(format!("{name}.json"));
        let json: serde_json::Value = store::read_json(&path).ok().flatten()?;
        let info =
            PoolInfo::from_state(&Value::from_json(&json, &crate::value::Type::Dynamic).ok()?)?;
        self.put_pool(info.clone());
        Some(info)
    }

    /// A burst policy by name: from this run, else from the records in `state_dir`.
    pub fn burst_policy(&self, state_dir: &Path, name: &str) -> Option<BurstPolicyInfo> {
        if let Some(p) = lock(&self.burst_policies).get(name) {
            return Some(p.clone());
        }
        let path = store::kind_dir(state_dir, "policies").join(format!("{name}.json"));
        let json: serde_json::Value = store::read_json(&path).ok().flatten()?;
        let info = BurstPolicyInfo::from_state(
            &Value::from_json(&json, &crate::value::Type::Dynamic).ok()?,
        )?;
        self.put_burst_policy(info.clone());
        Some(info)
    }

    /// Names of every pool known in this run, for "did you mean" hints.
    pub fn pool_names(&self) -> Vec<String> {
        lock(&self.pools).keys().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> PoolInfo {
        PoolInfo {
            name: name.into(),
            region: "eu-central-1".into(),
            jurisdiction: "EU".into(),
            capacity_type: "on_prem".into(),
            tenancy: "dedicated".into(),
            gpu_model: "cpu".into(),
            gpus_min: 0,
            gpus_max: 1,
            price_per_gpu_hour: None,
            local_devices: Some("cpu".into()),
            aws_group: None,
            slurm: None,
            join_token_sha256: Vec::new(),
            object: serde_json::Value::Null,
        }
    }

    #[test]
    fn demand_sums_the_endpoints_sharing_a_base_pool() {
        let r = Registry::default();
        assert_eq!(r.put_demand("a", vec!["rack".into()], 2), 2);
        assert_eq!(r.put_demand("b", vec!["other".into()], 5), 5);
        assert_eq!(r.put_demand("c", vec!["rack".into(), "x".into()], 1), 3);
        // Planning an endpoint again replaces its demand rather than adding to it.
        assert_eq!(r.put_demand("a", vec!["rack".into()], 1), 2);
    }

    #[test]
    fn names_outside_the_run_resolve_from_the_records_in_state_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = serde_json::json!({
            "name": "stored", "region": "eu-west-1", "jurisdiction": "EU",
            "capacity_type": "spot", "tenancy": "shared", "gpu": {"model": "H100"},
            "gpus_min": 0, "gpus_max": 8, "effective_price_per_gpu_hour": 2.5,
            "local": {"devices": "cpu"}
        });
        let pools = store::kind_dir(dir.path(), "pools");
        std::fs::create_dir_all(&pools).expect("pools dir");
        std::fs::write(pools.join("stored.json"), record.to_string()).expect("record");

        let r = Registry::default();
        r.put_pool(pool("planned"));
        let stored = r.pool(dir.path(), "stored").expect("from the record");
        assert_eq!(stored.capacity_type, "spot");
        assert_eq!(stored.price_per_gpu_hour, Some(2.5));
        assert_eq!(
            r.pool_names(),
            ["planned", "stored"],
            "a record read is remembered"
        );
        assert!(r.pool(dir.path(), "missing").is_none());
        assert!(r.burst_policy(dir.path(), "missing").is_none());
    }
}
