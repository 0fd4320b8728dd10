//! Where a simulated endpoint comes from: the router's config file, or a Terraform plan or state
//! as `terraform show -json` prints it. From a plan, the endpoint's `spill_order` (resolved by the
//! provider at plan time) gives the pools in order, its burst policy's `base_pools` their roles,
//! and each `gpucap_gpu_pool` its region, capacity type, price and size; placement is never
//! resolved twice.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::{
    BatchingSection, BudgetSection, EndpointSection, Fabric, FabricConfig, ModelSection,
    PolicySection, PoolSection, ReplicasSection, ResidencySection, RuntimeSection,
    ScaleDownSection, ScaleUpSection, StateSection,
};

/// An endpoint that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct SourceError {
    /// The file read.
    pub file: PathBuf,
    /// What is wrong, naming the resource or key.
    pub message: String,
}

/// The endpoint of a router config file, checked as `serve` checks it except that pools need no
/// driver.
pub fn from_config(path: &Path) -> Result<Fabric, SourceError> {
    let error = |message: String| SourceError {
        file: path.to_path_buf(),
        message,
    };
    let (config, _) = FabricConfig::from_file(path).map_err(|e| error(e.to_string()))?;
    config
        .validate_for_simulation()
        .map_err(|e| error(e.to_string()))
}

/// The endpoint named `name` in a `terraform show -json` plan or state.
pub fn from_plan(path: &Path, name: &str) -> Result<Fabric, SourceError> {
    let error = |message: String| SourceError {
        file: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        error(format!(
            "not JSON ({e}); give `terraform show -json` output"
        ))
    })?;
    let root = doc
        .pointer("/planned_values/root_module")
        .or_else(|| doc.pointer("/values/root_module"))
        .ok_or_else(|| {
            error("neither `planned_values` nor `values`; give `terraform show -json PLANFILE` or `terraform show -json` of a state".into())
        })?;
    let mut resources = Vec::new();
    collect(root, &mut resources);
    let config = endpoint_config(&resources, name).map_err(error)?;
    config
        .validate_for_simulation()
        .map_err(|e| error(format!("endpoint {name:?}: {e}")))
}

/// `(type, values)` of every resource in a module and its children.
fn collect<'a>(module: &'a Value, out: &mut Vec<(&'a str, &'a Value)>) {
    for r in module["resources"].as_array().into_iter().flatten() {
        if let (Some(t), Some(v)) = (r["type"].as_str(), r.get("values")) {
            out.push((t, v));
        }
    }
    for child in module["child_modules"].as_array().into_iter().flatten() {
        collect(child, out);
    }
}

fn find<'a>(resources: &[(&str, &'a Value)], kind: &str, name: &str) -> Option<&'a Value> {
    resources
        .iter()
        .find(|(t, v)| *t == kind && v["name"].as_str() == Some(name))
        .map(|(_, v)| *v)
}

/// A nested block: an object, or a one-element list in older renderings.
fn block(v: &Value) -> &Value {
    match v {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        other => other,
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    })
}

fn text(v: &Value, default: &str) -> String {
    v.as_str().unwrap_or(default).to_string()
}

fn endpoint_config(resources: &[(&str, &Value)], name: &str) -> Result<FabricConfig, String> {
    let e = find(resources, "gpucap_inference_endpoint", name).ok_or_else(|| {
        let names: Vec<&str> = resources
            .iter()
            .filter(|(t, _)| *t == "gpucap_inference_endpoint")
            .filter_map(|(_, v)| v["name"].as_str())
            .collect();
        format!(
            "no gpucap_inference_endpoint named {name:?}; the endpoints here are: {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )
    })?;
    let spill = strings(&e["spill_order"]).ok_or_else(|| {
        format!("endpoint {name:?}: spill_order is not known in this plan (a pool or policy it names is not known until apply); simulate a state (`terraform show -json`) or the router's config file")
    })?;
    let policy = match e["burst_policy"].as_str() {
        Some(p) => Some(find(resources, "gpucap_burst_policy", p).ok_or_else(|| {
            format!("endpoint {name:?}: its burst_policy {p:?} is not a gpucap_burst_policy here")
        })?),
        None => None,
    };
    let base: Vec<String> = match policy {
        Some(p) => strings(&p["base_pools"]).unwrap_or_default(),
        None => spill.clone(),
    };
    let pools = spill
        .iter()
        .map(|pool| {
            let p = find(resources, "gpucap_gpu_pool", pool).ok_or_else(|| {
                format!("endpoint {name:?}: spill_order names pool {pool:?}, which is not a gpucap_gpu_pool here")
            })?;
            let gpus_max = p["gpus_max"].as_u64().ok_or_else(|| {
                format!("pool {pool:?}: gpus_max is not known")
            })?;
            Ok(PoolSection {
                name: pool.clone(),
                role: if base.contains(pool) { "base" } else { "burst" }.to_string(),
                region: text(&p["region"], ""),
                jurisdiction: text(&p["jurisdiction"], ""),
                capacity_type: text(&p["capacity_type"], "on_prem"),
                price_per_gpu_hour: p["effective_price_per_gpu_hour"]
                    .as_f64()
                    .or_else(|| p["price_per_gpu_hour"].as_f64()),
                gpus_max: gpus_max as usize,
                local: None,
                aws_autoscaling_group: None,
                slurm: None,
                join_token_sha256: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let defaults = BatchingSection::default();
    let b = block(&e["batching"]);
    let setting = |k: &str, d: u64| b[k].as_u64().unwrap_or(d);
    let batching = BatchingSection {
        max_batch_size: setting("max_batch_size", defaults.max_batch_size as u64) as usize,
        max_queue_delay_us: setting("max_queue_delay_us", defaults.max_queue_delay_us),
        queue_capacity: setting("queue_capacity", defaults.queue_capacity as u64) as usize,
        request_timeout_ms: setting("request_timeout_ms", defaults.request_timeout_ms),
    };
    let r = block(&e["replicas"]);
    let residency = block(&e["data_residency"]);
    Ok(FabricConfig {
        endpoint: EndpointSection::new(name, "127.0.0.1:0".into()),
        model: ModelSection {
            path: PathBuf::from(text(&block(&e["model"])["path"], "")),
            version: text(&block(&e["model"])["version"], "1"),
        },
        batching,
        replicas: ReplicasSection {
            min: r["min"].as_u64().unwrap_or(1) as usize,
            max: r["max"].as_u64().unwrap_or(1) as usize,
        },
        residency: ResidencySection {
            allowed_jurisdictions: strings(&residency["allowed_jurisdictions"]),
            allowed_regions: strings(&residency["allowed_regions"]),
        },
        policy: policy.map(policy_section),
        pools,
        runtime: RuntimeSection {
            path: PathBuf::new(),
        },
        state: StateSection {
            dir: PathBuf::new(),
            ledger_dir: None,
        },
        auth: Default::default(),
        tls: None,
    })
}

fn policy_section(p: &Value) -> PolicySection {
    let up = block(&p["scale_up"]);
    let down = block(&p["scale_down"]);
    let budget = block(&p["budget"]);
    PolicySection {
        name: text(&p["name"], ""),
        spot_fallback: text(&p["spot_fallback"], "none"),
        scale_up: ScaleUpSection {
            queue_depth: up["queue_depth"].as_f64(),
            p99_latency_ms: up["p99_latency_ms"].as_f64(),
            gpu_utilization: up["gpu_utilization"].as_f64(),
            sustain: text(&up["for"], "1m"),
            stable_window: up["stable_window"].as_str().map(str::to_string),
            panic_window: up["panic_window"].as_str().map(str::to_string),
            panic_threshold: up["panic_threshold"].as_f64(),
        },
        scale_down: ScaleDownSection {
            idle_for: text(&down["idle_for"], "10m"),
            min_warm_replicas: down["min_warm_replicas"].as_u64().unwrap_or(0) as usize,
            drain_timeout: text(&down["drain_timeout"], "30s"),
        },
        budget: budget["max_hourly_usd"]
            .as_f64()
            .map(|max_hourly_usd| BudgetSection {
                max_hourly_usd,
                on_exhausted: text(&budget["on_exhausted"], "queue"),
            }),
        predictive: p["predictive"].as_bool().unwrap_or(false),
    }
}
