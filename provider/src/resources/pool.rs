//! `gpucap_gpu_pool`: a source of GPU capacity — where it is, what it costs, and the driver that
//! reaches it. With the `local` driver the pool is this host's devices.

use async_trait::async_trait;

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::aws;
use crate::diag::{Diagnostic, Diagnostics};
use crate::models::pool::{self as model, GpuPool as Model};
use crate::models::{self, Attr};
use crate::plan;
use crate::regions;
use crate::registry::PoolInfo;
use crate::resources::records;
use crate::schema::Schema;
use crate::slurm;
use crate::validate;
use crate::value::Value;
use gpucap_fabric::driver::aws::GroupState;
use gpucap_fabric::driver::local;
use gpucap_fabric::driver::slurm_api::SlurmRef;
use gpucap_policy::cost::{Catalog, PoolCost};

/// The resource type.
pub struct GpuPool;

#[async_trait]
impl Resource for GpuPool {
    fn type_name(&self) -> &'static str {
        model::TYPE_NAME
    }

    fn schema(&self) -> &'static Schema {
        model::schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        let mut d = validate::typed(&model::schema().block, c, |m: &Model, d| {
            if let Some(r) = m.region.as_str()
                && r.trim().is_empty()
            {
                d.push(Diagnostic::attr_error(
                    "region",
                    "Empty region",
                    "name the region or on-prem site the capacity is in",
                ));
            }
            if let Some(j) = m.jurisdiction.as_str()
                && (j.is_empty() || !j.chars().all(|ch| ch.is_ascii_uppercase()))
            {
                d.push(Diagnostic::attr_error(
                    "jurisdiction",
                    "Invalid jurisdiction",
                    format!(
                        "{j:?} is not a jurisdiction code; use uppercase letters such as {}",
                        regions::jurisdictions().join(", ")
                    ),
                ));
            }
            if let Some(spec) = m.local.known().and_then(|l| l.devices.as_str())
                && let Err(e) = local::check_devices(spec)
            {
                d.push(Diagnostic::attr_error(
                    "local.devices",
                    "Invalid device list",
                    e.to_string(),
                ));
            }
            if let Some(url) = m.slurm.known().and_then(|b| b.rest_url.as_str())
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                d.push(Diagnostic::attr_error(
                    "slurm.rest_url",
                    "Invalid slurmrestd URL",
                    format!("{url:?} is not an http:// or https:// URL, e.g. \"https://slurm.lab.example:6820\""),
                ));
            }
            check_driver_blocks(m, d);
        });
        validate::min_le_max(&mut d, c, "nodes");
        d
    }

    fn plan(&self, ctx: &Ctx, req: &PlanRequest) -> Result<Planned, Diagnostics> {
        let stated = models::decode_object::<Model>(&req.config)?.unwrap_or_default();
        let planned = plan::typed(model::schema(), self.state_type(), req, |m: &mut Model| {
            let mut d = Diagnostics::default();
            resolve_jurisdiction(m, &stated.jurisdiction, &mut d);
            derive_capacity(m, &ctx.config.catalog);
            if !m.slurm.is_null() {
                check_partition(m, stated.slurm.known(), &mut d);
            } else if m.aws_autoscaling_group.is_null() {
                match m
                    .local
                    .known()
                    .and_then(|l| l.devices.as_str())
                    .map(local::devices_for)
                {
                    Some(Ok(found)) => m.devices = names(found),
                    Some(Err(e)) => d.push(Diagnostic::attr_error(
                        "local.devices",
                        "Devices not available on this host",
                        e.to_string(),
                    )),
                    None => m.devices = Attr::Unknown,
                }
            } else {
                check_group(ctx, m, &mut d);
            }
            if d.has_errors() { Err(d) } else { Ok(d) }
        })?;
        remember(ctx, &planned.state);
        Ok(planned)
    }

    async fn apply(&self, ctx: &Ctx, prior: Value, planned: Value) -> Applied {
        let planned = count_jobs_if_unknown(planned, self.state_type());
        let applied = records::apply(ctx, "pools", "pool", prior, planned);
        remember(ctx, &applied.state);
        applied
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let state = records::read(ctx, "pools", "pool", state)?;
        if state.is_null() {
            return Ok(state);
        }
        let mut m: Model = models::decode(&state)?;
        // What the group reports now is reality: its bounds, desired capacity and instances.
        if let Some(group) = group_ref(ctx, &m)
            && let Ok(Some(g)) = aws::read_group(&group)
        {
            record_group(&mut m, &g);
        }
        // The pool's jobs, as Slurm reports them now.
        if let Some((target, partition)) = slurm_ref(&m)
            && let Ok(jobs) =
                slurm::pool_jobs(&target, &partition, m.name.as_str().unwrap_or_default())
            && let Some(block) = m.slurm.known_mut()
        {
            block.running = Attr::Known(jobs.running);
            block.pending = Attr::Known(jobs.pending);
        }
        // What the host has now is reality; the next plan shows a change when it differs.
        if let Some(Ok(found)) = m
            .local
            .known()
            .and_then(|l| l.devices.as_str())
            .map(local::devices_for)
        {
            m.devices = names(found);
        }
        let state = models::encode(&m, self.state_type())?;
        remember(ctx, &state);
        Ok(state)
    }

    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics> {
        records::import(ctx, "pools", self.type_name(), name, self.state_type())
    }
}

/// Exactly one driver block, and join tokens where machines join.
fn check_driver_blocks(m: &Model, d: &mut Diagnostics) {
    let drivers: Vec<&str> = [
        ("local", m.local.is_null()),
        ("aws_autoscaling_group", m.aws_autoscaling_group.is_null()),
        ("slurm", m.slurm.is_null()),
    ]
    .into_iter()
    .filter_map(|(name, absent)| (!absent).then_some(name))
    .collect();
    match drivers.as_slice() {
        [] => d.push(Diagnostic::error(
            "No driver for the pool",
            "a gpucap_gpu_pool needs exactly one driver block: `local {}` for this host's devices, `aws_autoscaling_group { name = \"…\" }`, or `slurm { rest_url = \"…\", partition = \"…\" }`",
        )),
        [_] => {}
        [_, second, ..] => d.push(Diagnostic::attr_error(
            second,
            "Two drivers for one pool",
            format!(
                "a gpucap_gpu_pool has exactly one driver block, and this one has {}; keep one",
                drivers.join(" and ")
            ),
        )),
    }
    let hashes = m
        .join_token_sha256
        .known()
        .map(|v| v.as_slice())
        .unwrap_or_default();
    for (i, h) in hashes.iter().enumerate() {
        if let Some(h) = h.as_str()
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            d.push(Diagnostic::attr_error(
                &format!("join_token_sha256[{i}]"),
                "Not a SHA-256",
                format!("{h:?} is not 64 hex digits; use a gpucap_join_token's sha256"),
            ));
        }
    }
    if !m.aws_autoscaling_group.is_null() && m.join_token_sha256.is_null() {
        d.push(Diagnostic::attr_error(
            "join_token_sha256",
            "Join token required",
            "the group's instances join the router with a token; set join_token_sha256 = [gpucap_join_token.NAME.sha256]",
        ));
    }
}

/// The pool's group, when its name and region are known.
fn group_ref(ctx: &Ctx, m: &Model) -> Option<gpucap_fabric::driver::aws::GroupRef> {
    let block = m.aws_autoscaling_group.known()?;
    Some(
        ctx.config
            .aws
            .group(block.name.as_str()?, m.region.as_str()?),
    )
}

/// Fills the computed attributes from the group as read.
fn record_group(m: &mut Model, g: &GroupState) {
    if let Some(block) = m.aws_autoscaling_group.known_mut() {
        block.min_size = Attr::Known(i64::from(g.min_size));
        block.max_size = Attr::Known(i64::from(g.max_size));
        block.desired_capacity = Attr::Known(i64::from(g.desired));
        block.in_service = Attr::Known(
            g.instances
                .iter()
                .filter(|i| i.lifecycle == "InService")
                .count() as i64,
        );
    }
}

/// Plan reads the group: one that does not exist in the pool's region, or whose `MaxSize` is
/// below `nodes.max`, is an error; a capacity type the group's purchase options contradict is a
/// warning.
fn check_group(ctx: &Ctx, m: &mut Model, d: &mut Diagnostics) {
    let Some(group) = group_ref(ctx, m) else {
        return;
    };
    m.devices = names(vec![format!("aws:{}", group.name)]);
    let g = match aws::read_group(&group) {
        Ok(Some(g)) => g,
        Ok(None) => {
            d.push(Diagnostic::attr_error(
                "aws_autoscaling_group.name",
                "Auto Scaling group not found",
                format!(
                    "there is no Auto Scaling group {:?} in {} (the pool's region); create it first (with the AWS provider) or fix the name or the region",
                    group.name, group.region
                ),
            ));
            return;
        }
        Err(e) => {
            d.push(Diagnostic::attr_error(
                "aws_autoscaling_group.name",
                "Cannot read the Auto Scaling group",
                format!("{e}; check the AWS credentials of the environment Terraform runs in, or the provider's aws block"),
            ));
            return;
        }
    };
    record_group(m, &g);
    if let Some(max) = m.nodes.known().and_then(|n| n.max.get())
        && max > i64::from(g.max_size)
    {
        d.push(Diagnostic::attr_error(
            "nodes.max",
            "More nodes than the group may have",
            format!(
                "nodes.max is {max} but Auto Scaling group {:?} has MaxSize {}; gpucap never changes the group's bounds: raise MaxSize or lower nodes.max",
                group.name, g.max_size
            ),
        ));
    }
    let all_on_demand = !g.mixed_instances || g.on_demand_percentage >= 100;
    let all_spot = g.mixed_instances && g.on_demand_percentage == 0 && g.on_demand_base == 0;
    match m.capacity_type.as_str() {
        Some("spot") if all_on_demand => d.push(Diagnostic::attr_warning(
            "capacity_type",
            "The group buys no spot capacity",
            format!(
                "the pool is declared spot but Auto Scaling group {:?} has no spot share in a mixed-instances policy: its instances are on-demand, and prices and fallbacks will be wrong",
                group.name
            ),
        )),
        Some("on_demand") if all_spot => d.push(Diagnostic::attr_warning(
            "capacity_type",
            "The group buys only spot capacity",
            format!(
                "the pool is declared on_demand but Auto Scaling group {:?} launches only spot instances, which AWS may reclaim",
                group.name
            ),
        )),
        _ => {}
    }
}

/// A new Slurm pool's job counts, read now (0 when the cluster cannot be read: refresh reads
/// them again).
fn count_jobs_if_unknown(planned: Value, ty: &crate::value::Type) -> Value {
    let Ok(mut m) = models::decode::<Model>(&planned) else {
        return planned;
    };
    if !m.slurm.known().is_some_and(|b| b.running.is_unknown()) {
        return planned;
    }
    let jobs = slurm_ref(&m)
        .and_then(|(target, partition)| {
            slurm::pool_jobs(&target, &partition, m.name.as_str().unwrap_or_default()).ok()
        })
        .unwrap_or_default();
    if let Some(block) = m.slurm.known_mut() {
        block.running = Attr::Known(jobs.running);
        block.pending = Attr::Known(jobs.pending);
    }
    models::encode(&m, ty).unwrap_or(planned)
}

/// Where the pool's `slurmrestd` is and the partition, when those are known.
fn slurm_ref(m: &Model) -> Option<(SlurmRef, String)> {
    let b = m.slurm.known()?;
    let target = SlurmRef {
        rest_url: b.rest_url.as_str()?.trim_end_matches('/').to_string(),
        api_version: b.api_version.as_str()?.to_string(),
        user: b.user.as_str()?.to_string(),
        token_file: b.token_file.as_str().map(std::path::PathBuf::from),
    };
    Some((target, b.partition.as_str()?.to_string()))
}

/// Plan fills the block's defaults and reads the partition: one the cluster does not have, a
/// `gres` none of its nodes has, or `nodes.max` beyond the jobs it holds at once is an error.
/// `stated` is the block as configured (what it leaves unset gets its default here).
fn check_partition(m: &mut Model, stated: Option<&model::Slurm>, d: &mut Diagnostics) {
    let unset = |a: fn(&model::Slurm) -> &Attr<String>| stated.is_none_or(|s| a(s).is_null());
    let gpu_model = m
        .gpu
        .known()
        .and_then(|g| g.model.as_str())
        .map(str::to_string);
    let per_node = m.gpu.known().and_then(|g| g.per_node.get());
    let nodes_max = m.nodes.known().and_then(|n| n.max.get());
    if let Some(partition) = m.slurm.known().and_then(|b| b.partition.as_str()) {
        m.devices = names(vec![format!("slurm:{partition}")]);
    }
    let Some(block) = m.slurm.known_mut() else {
        return;
    };
    if unset(|s| &s.user) {
        match std::env::var("USER") {
            Ok(user) => block.user = Attr::Known(user),
            Err(_) => d.push(Diagnostic::attr_error(
                "slurm.user",
                "No Slurm user",
                "USER is not set in Terraform's environment; name the Slurm user the jobs are submitted as",
            )),
        }
    }
    if unset(|s| &s.gres) {
        block.gres = match (gpu_model.as_deref(), per_node) {
            (Some("cpu"), _) => Attr::Null,
            (Some(_), Some(n)) => Attr::Known(format!("gpu:{n}")),
            _ => Attr::Unknown,
        };
    }
    if let Some(t) = block.time_limit.as_str()
        && humantime::parse_duration(t).map_or(true, |l| l.as_secs() < 60)
    {
        d.push(Diagnostic::attr_error(
            "slurm.time_limit",
            "Invalid time limit",
            format!(
                "{t:?} is not a duration of a minute or more; write it like \"24h\" or \"90m\""
            ),
        ));
    }
    // In whole minutes, as Slurm takes it.
    let limit = block
        .time_limit
        .as_str()
        .and_then(|t| humantime::parse_duration(t).ok())
        .map(|l| std::time::Duration::from_secs(l.as_secs() / 60 * 60));
    let block_time_limit = block.time_limit.as_str().unwrap_or_default().to_string();
    if let Some(ahead) = block.replace_before.as_str() {
        match humantime::parse_duration(ahead) {
            Err(e) => d.push(Diagnostic::attr_error(
                "slurm.replace_before",
                "Invalid duration",
                format!("{ahead:?}: {e}; write it like \"10m\""),
            )),
            Ok(ahead) if limit.is_some_and(|l| ahead >= l) => d.push(Diagnostic::attr_error(
                "slurm.replace_before",
                "Not shorter than the time limit",
                format!(
                    "replace_before ({}) must be shorter than time_limit ({}), or every job would be replaced as soon as it runs",
                    humantime::format_duration(ahead),
                    block.time_limit.as_str().unwrap_or_default()
                ),
            )),
            Ok(_) => {}
        }
    }
    let gres = match &block.gres {
        Attr::Known(g) => match gpucap_fabric::driver::slurm_api::parse_gres_request(g) {
            Some(request) => Some(request),
            None => {
                d.push(Diagnostic::attr_error(
                    "slurm.gres",
                    "Invalid gres",
                    format!("{g:?} is not a generic resource request; write it like \"gpu:1\" or \"gpu:a100:2\""),
                ));
                return;
            }
        },
        Attr::Null => None,
        _ => return,
    };
    let Some((target, partition)) = slurm_ref(m) else {
        return;
    };
    let found = match slurm::read_partition(&target, &partition) {
        Ok(Some(found)) => found,
        Ok(None) => {
            let known = slurm::partition_names(&target)
                .map(|names| format!(" (its partitions: {})", names.join(", ")))
                .unwrap_or_default();
            d.push(Diagnostic::attr_error(
                "slurm.partition",
                "Slurm partition not found",
                format!(
                    "the cluster at {} has no partition {partition:?}{known}; fix the name or ask the cluster's admins for one",
                    target.rest_url
                ),
            ));
            return;
        }
        Err(e) => {
            d.push(Diagnostic::attr_error(
                "slurm.rest_url",
                "Cannot read the Slurm partition",
                format!("{e}; check slurmrestd's URL, the user and the token (slurm.token_file or SLURM_JWT)"),
            ));
            return;
        }
    };
    if let (Some(limit), Ok(max)) = (limit, u64::try_from(found.info.max_time_limit))
        && limit.as_secs() > max.saturating_mul(60)
    {
        d.push(Diagnostic::attr_error(
            "slurm.time_limit",
            "Longer than the partition allows",
            format!(
                "time_limit is {} but partition {partition:?} allows jobs at most {}; Slurm would refuse every job: lower time_limit",
                block_time_limit,
                humantime::format_duration(std::time::Duration::from_secs(max.saturating_mul(60)))
            ),
        ));
    }
    if found.info.state != "UP" {
        d.push(Diagnostic::attr_warning(
            "slurm.partition",
            "The partition is not up",
            format!(
                "Slurm reports partition {partition:?} {}: jobs will wait in the queue until it is UP",
                found.info.state
            ),
        ));
    }
    // How many of the pool's jobs (one replica each) the partition can run at once.
    let holds = match &gres {
        Some((name, count)) => {
            let per_node: Vec<(String, u64)> = found
                .nodes
                .iter()
                .map(|n| {
                    (
                        n.name.clone(),
                        gpucap_fabric::driver::slurm_api::gres_count(&n.gres, name),
                    )
                })
                .collect();
            let most = per_node.iter().map(|(_, c)| *c).max().unwrap_or(0);
            if most < *count {
                d.push(Diagnostic::attr_error(
                    "slurm.gres",
                    "No node can run the job",
                    format!(
                        "each job asks for {count} {name} but no node of partition {partition:?} has that many (the most is {most}); lower slurm.gres (and gpu.per_node) or use another partition",
                    ),
                ));
                return;
            }
            per_node.iter().map(|(_, c)| c / count).sum::<u64>()
        }
        None => found.info.total_cpus,
    };
    if let Some(max) = nodes_max
        && u64::try_from(max).is_ok_and(|max| max > holds)
    {
        let per_job = gres.as_ref().map_or("1 CPU".to_string(), |(name, count)| {
            format!("{count} {name}")
        });
        d.push(Diagnostic::attr_error(
            "nodes.max",
            "More nodes than the partition holds",
            format!(
                "nodes.max is {max}, but partition {partition:?} ({} node(s)) runs at most {holds} job(s) of {per_job} at once; lower nodes.max or use a larger partition",
                found.nodes.len()
            ),
        ));
    }
    // The job counts stay as refresh read them (unknown for a new pool, filled at apply), so
    // that jobs coming and going neither show as a change nor make apply's plan differ.
}

/// Lets the policies and endpoints of this run resolve the pool by name.
fn remember(ctx: &Ctx, state: &Value) {
    if let Some(info) = PoolInfo::from_state(state) {
        ctx.registry.put_pool(info);
    }
}

fn names(found: Vec<String>) -> models::Names {
    Attr::Known(found.into_iter().map(Attr::Known).collect())
}

/// Fills `jurisdiction` from the region table, or checks the one the configuration states.
fn resolve_jurisdiction(m: &mut Model, stated: &Attr<String>, d: &mut Diagnostics) {
    let Some(region) = m.region.as_str().map(str::to_string) else {
        return;
    };
    if stated.is_unknown() {
        return;
    }
    match (regions::lookup(&region), stated.as_str()) {
        (Some(r), None) => m.jurisdiction = Attr::Known(r.jurisdiction.to_string()),
        (Some(r), Some(j)) if j != r.jurisdiction => d.push(Diagnostic::attr_error(
            "jurisdiction",
            "Jurisdiction contradicts the region",
            format!("region {region:?} ({}, {}) is in jurisdiction {:?}, not {j:?}; remove jurisdiction to derive it", r.location, r.country, r.jurisdiction),
        )),
        (Some(_), Some(_)) => {}
        (None, Some(j)) => m.jurisdiction = Attr::Known(j.to_string()),
        (None, None) => {
            let hint = regions::suggest(&region).map(|s| format!(" Did you mean {s:?}?")).unwrap_or_default();
            d.push(Diagnostic::attr_error(
                "jurisdiction",
                "Jurisdiction required",
                format!("region {region:?} is not in the built-in region table (an on-prem site?), so its jurisdiction cannot be derived; set jurisdiction, e.g. \"EU\".{hint}"),
            ));
        }
    }
}

/// GPUs and cost at minimum and maximum size, from the shared cost model: known at plan time
/// whenever the inputs are (the price is the pool's own, else the price catalog's).
fn derive_capacity(m: &mut Model, catalog: &Catalog) {
    let gpu = m.gpu.known();
    let nodes = m.nodes.known();
    let per_node = gpu.and_then(|g| g.per_node.get());
    let (min, max) = (
        nodes.and_then(|n| n.min.get()),
        nodes.and_then(|n| n.max.get()),
    );
    let model = gpu.and_then(|g| g.model.as_str()).map(str::to_string);
    let (Some(per_node), Some(min), Some(max), Some(model), Some(capacity_type)) = (
        per_node,
        min,
        max,
        model,
        m.capacity_type.as_str().map(str::to_string),
    ) else {
        m.gpus_min = Attr::Unknown;
        m.gpus_max = Attr::Unknown;
        unknown_cost(m);
        return;
    };
    if m.price_per_gpu_hour.is_unknown() {
        m.gpus_min = Attr::Known(min * per_node);
        m.gpus_max = Attr::Known(max * per_node);
        unknown_cost(m);
        return;
    }
    let cost = PoolCost::new(
        m.price_per_gpu_hour.get(),
        &model,
        &capacity_type,
        min * per_node,
        max * per_node,
        catalog,
    );
    m.gpus_min = Attr::Known(cost.gpus_min);
    m.gpus_max = Attr::Known(cost.gpus_max);
    m.effective_price_per_gpu_hour = cost.usd_per_gpu_hour.into();
    m.price_source = Attr::Known(cost.source.describe());
    m.hourly_cost_min_usd = cost.hourly_min().into();
    m.hourly_cost_max_usd = cost.hourly_max().into();
}

/// The price and costs, unknown until their inputs are.
fn unknown_cost(m: &mut Model) {
    m.effective_price_per_gpu_hour = Attr::Unknown;
    m.price_source = Attr::Unknown;
    m.hourly_cost_min_usd = Attr::Unknown;
    m.hourly_cost_max_usd = Attr::Unknown;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::{Harness, errors};

    const POOL: &str = "gpucap_gpu_pool";

    #[test]
    fn validation_names_the_attribute_and_what_is_valid() {
        let h = Harness::new();
        let d = h.validate(
            POOL,
            json!({"name": "Bad Name", "region": "eu-central-1", "capacity_type": "cheap",
                   "gpu": {"model": "H100"}, "nodes": {"min": 3, "max": 2}}),
        );
        let text = errors(&d);
        assert!(text.contains("capacity_type"), "{text}");
        assert!(
            text.contains("on_demand"),
            "the valid values are listed: {text}"
        );
        assert!(
            d.0.iter().any(|d| d.path.is_some()),
            "errors point at attributes"
        );
        assert!(d.0.len() >= 3, "every bad attribute is reported: {text}");
    }

    #[test]
    fn plan_derives_jurisdiction_and_prices_from_the_catalog() {
        let h = Harness::new();
        let planned = h
            .plan_create(
                POOL,
                json!({"name": "cloud", "region": "eu-central-1", "capacity_type": "on_demand",
                       "gpu": {"model": "H100", "per_node": 8}, "nodes": {"max": 2},
                       "local": {"devices": "cpu"}}),
            )
            .expect("plan");
        let s = &planned.state;
        assert_eq!(s.get("jurisdiction").as_str(), Some("EU"));
        assert_eq!(s.get("effective_price_per_gpu_hour").as_f64(), Some(6.88));
        assert_eq!(s.get("gpus_max").as_i64(), Some(16));
        let max = s
            .get("hourly_cost_max_usd")
            .as_f64()
            .expect("cost known at plan");
        assert!((max - 110.08).abs() < 1e-9, "16 GPUs x 6.88: {max}");
        assert!(
            s.get("price_source")
                .as_str()
                .is_some_and(|p| p.starts_with("catalog:"))
        );
        assert_eq!(s.get("id").as_str(), Some("cloud"), "the id is the name");
    }

    #[test]
    fn a_model_no_catalog_prices_has_no_cost() {
        let h = Harness::new();
        let planned = h
            .plan_create(
                POOL,
                json!({"name": "exotic", "region": "eu-west-1", "gpu": {"model": "MI300X"},
                       "nodes": {"max": 1}, "local": {"devices": "cpu"}}),
            )
            .expect("plan");
        assert!(planned.state.get("hourly_cost_max_usd").is_null());
    }

    #[test]
    fn a_pool_has_one_driver_and_a_slurm_block_a_url() {
        let h = Harness::new();
        let d = h.validate(
            POOL,
            json!({"name": "hpc", "region": "eu-central-1", "gpu": {"model": "L4"},
                   "nodes": {"max": 1}, "local": {},
                   "slurm": {"rest_url": "slurm-head:6820", "partition": "gpu"}}),
        );
        let text = errors(&d);
        assert!(text.contains("Two drivers"), "{text}");
        assert!(text.contains("local and slurm"), "{text}");
        assert!(text.contains("is not an http:// or https:// URL"), "{text}");
        let d = h.validate(
            POOL,
            json!({"name": "hpc", "region": "eu-central-1", "gpu": {"model": "L4"},
                   "nodes": {"max": 1}}),
        );
        assert!(errors(&d).contains("`slurm { rest_url"), "{}", errors(&d));
    }

    #[test]
    fn a_destroy_plans_null() {
        let h = Harness::new();
        let created = h
            .plan_create(
                POOL,
                json!({"name": "rack", "region": "eu-central-1", "gpu": {"model": "cpu"},
                       "nodes": {"max": 1}, "local": {}}),
            )
            .expect("create");
        let destroy = h
            .provider
            .plan_resource(
                POOL,
                crate::api::PlanRequest {
                    prior: created.state,
                    proposed: crate::value::Value::Null,
                    config: crate::value::Value::Null,
                },
            )
            .expect("destroy");
        assert!(destroy.state.is_null());
    }
}
