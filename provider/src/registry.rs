//! Names resolved at plan time. Endpoints name their burst policy and policies name their pools;
//! ids are unknown until apply but names are known, so the provider remembers every pool and policy
//! it planned, read or applied in this process and resolves names against them, falling back to the
//! records the drivers keep for objects outside this run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store;
use crate::value::Value;

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

    /// From a pool's planned or stored state; `None` while something needed is unknown.
    pub fn from_state(v: &Value) -> Option<PoolInfo> {
        let s = |k: &str| v.get(k).as_str().map(str::to_string);
        let gpu = v.get("gpu");
        Some(PoolInfo {
            name: s("name")?,
            region: s("region")?,
            jurisdiction: s("jurisdiction")?,
            capacity_type: s("capacity_type")?,
            tenancy: s("tenancy")?,
            gpu_model: gpu.get("model").as_str()?.to_string(),
            gpus_min: v.get("gpus_min").as_i64()?,
            gpus_max: v.get("gpus_max").as_i64()?,
            price_per_gpu_hour: v.get("effective_price_per_gpu_hour").as_f64(),
            local_devices: v.get("local").get("devices").as_str().map(str::to_string),
            object: v.to_json_unknown_as_null(),
        })
    }
}

/// What the rest of the run needs to know about a burst policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// Its name.
    pub name: String,
    /// Baseline pools, in order.
    pub base_pools: Vec<String>,
    /// Burst pools, in order.
    pub burst_pools: Vec<String>,
    /// `none` or `on_demand`.
    pub spot_fallback: String,
    /// Cap on burst spend, USD per hour.
    pub budget_max_hourly_usd: Option<f64>,
    /// Seconds to drain a replica before stopping it.
    pub drain_timeout_s: u64,
    /// Replicas kept warm.
    pub min_warm_replicas: i64,
    /// The whole object (unknowns as null), as policy rules read it in `policy`. Not serialized,
    /// for the same reason as [`PoolInfo::object`].
    #[serde(skip)]
    pub object: serde_json::Value,
}

impl PolicyInfo {
    /// From a policy's planned or stored state; `None` while something needed is unknown.
    pub fn from_state(v: &Value) -> Option<PolicyInfo> {
        let names = |k: &str| -> Option<Vec<String>> {
            match v.get(k) {
                Value::Null => Some(Vec::new()),
                other => other
                    .as_list()?
                    .iter()
                    .map(|e| e.as_str().map(str::to_string))
                    .collect(),
            }
        };
        let drain = v
            .get("scale_down")
            .get("drain_timeout")
            .as_str()
            .unwrap_or("30s");
        Some(PolicyInfo {
            name: v.get("name").as_str()?.to_string(),
            base_pools: names("base_pools")?,
            burst_pools: names("burst_pools")?,
            spot_fallback: v
                .get("spot_fallback")
                .as_str()
                .unwrap_or("none")
                .to_string(),
            budget_max_hourly_usd: v.get("budget").get("max_hourly_usd").as_f64(),
            drain_timeout_s: humantime::parse_duration(drain).map_or(30, |d| d.as_secs()),
            min_warm_replicas: v
                .get("scale_down")
                .get("min_warm_replicas")
                .as_i64()
                .unwrap_or(0),
            object: v.to_json_unknown_as_null(),
        })
    }
}

/// The run-wide registry.
#[derive(Default)]
pub struct Registry {
    pools: Mutex<BTreeMap<String, PoolInfo>>,
    policies: Mutex<BTreeMap<String, PolicyInfo>>,
    /// Endpoint name → (its base pools, its minimum replicas), for the capacity guarantee.
    demand: Mutex<BTreeMap<String, (Vec<String>, i64)>>,
}

impl Registry {
    /// Remembers a pool.
    pub fn put_pool(&self, p: PoolInfo) {
        lock(&self.pools).insert(p.name.clone(), p);
    }

    /// Remembers a policy.
    pub fn put_policy(&self, p: PolicyInfo) {
        lock(&self.policies).insert(p.name.clone(), p);
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
    pub fn policy(&self, state_dir: &Path, name: &str) -> Option<PolicyInfo> {
        if let Some(p) = lock(&self.policies).get(name) {
            return Some(p.clone());
        }
        let path = store::kind_dir(state_dir, "policies").join(format!("{name}.json"));
        let json: serde_json::Value = store::read_json(&path).ok().flatten()?;
        let info =
            PolicyInfo::from_state(&Value::from_json(&json, &crate::value::Type::Dynamic).ok()?)?;
        self.put_policy(info.clone());
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
