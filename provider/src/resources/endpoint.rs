//! `gpucap_inference_endpoint`: a served model. Planning resolves its pools (directly or through a
//! burst policy, with the placement every part of gpucap shares), enforces the residency and
//! capacity guarantees, and computes costs; applying sends the endpoint's router config to a
//! fabric daemon (its region's, or the embedded one on this host, see [`crate::embedded`]), whose
//! router starts, scales and stops the replicas on those pools.

use async_trait::async_trait;
use gpucap_fabric::config::{
    AuthMode, AuthSection, BatchingSection, EndpointSection, FabricConfig, ModelSection,
    ReplicasSection, ResidencySection, RuntimeSection, StateSection, TlsSection,
};
use gpucap_fabric::deploy::EndpointDir;
use gpucap_fabric::store;
use gpucap_policy::gpucap::placement::{self, Missing, Residency, Resolved, Source};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::{Applied, Ctx, PlanRequest, Planned, Resource};
use crate::diag::{Diagnostic, Diagnostics};
use crate::embedded;
use crate::fabrics::{self, FabricTarget};
use crate::models::endpoint::{self as model, InferenceEndpoint as Model};
use crate::models::{self, Attr, Names};
use crate::plan;
use crate::registry::{BurstPolicyInfo, PoolInfo, RouterSite};
use crate::resources::burst_policy::unknown_pool;
use crate::resources::hosted;
use crate::schema::Schema;
use crate::validate;
use crate::value::Value;

/// The resource type.
pub struct InferenceEndpoint;

/// The pools an endpoint runs on, resolved: base pools, then burst pools in spill order.
type Placement = Resolved<PoolInfo, BurstPolicyInfo>;

#[async_trait]
impl Resource for InferenceEndpoint {
    fn type_name(&self) -> &'static str {
        model::TYPE_NAME
    }

    fn schema(&self) -> &'static Schema {
        model::schema()
    }

    fn validate(&self, c: &Value) -> Diagnostics {
        let mut d = validate::typed(&model::schema().block, c, |m: &Model, d| {
            let model_block = m.model.known();
            if let Some(v) = model_block.and_then(|b| b.version.as_str())
                && !validate::is_valid_name(&v.to_ascii_lowercase())
            {
                d.push(Diagnostic::attr_error(
                    "model.version",
                    "Invalid model.version",
                    format!("{v:?} is not valid; use letters, digits, '-', '_' or '.'"),
                ));
            }
            if let Some(p) = model_block.and_then(|b| b.path.as_str())
                && p.trim().is_empty()
            {
                d.push(Diagnostic::attr_error(
                    "model.path",
                    "Empty model.path",
                    "name the model's .safetensors file",
                ));
            }
            if !m.burst_policy.is_unknown() && !m.pools.is_unknown() {
                match (m.burst_policy.is_null(), m.pools.is_null()) {
                    (false, false) => d.push(Diagnostic::attr_error("pools", "Conflicting placement", "set either burst_policy or pools, not both")),
                    (true, true) => d.push(Diagnostic::attr_error("pools", "No placement", "set burst_policy (a gpucap_burst_policy's name) or pools (a list of gpucap_gpu_pool names)")),
                    _ => {}
                }
            }
        });
        validate::min_le_max(&mut d, c, "replicas");
        d
    }

    fn plan(&self, ctx: &Ctx, req: &PlanRequest) -> Result<Planned, Diagnostics> {
        let prior: Option<Model> = models::decode_object(&req.prior)?;
        plan::typed(model::schema(), self.state_type(), req, |m: &mut Model| {
            let mut d = Diagnostics::default();
            plan_model(m, &mut d);
            check_gateway(m, &mut d);
            let settings = effective(m)?;
            match resolve_placement(ctx, m) {
                Some(p) => {
                    report_missing(ctx, m, &p, &mut d);
                    check_residency(&settings, &p, &mut d);
                    check_capacity(ctx, &settings, &p, &mut d);
                    check_drivers(&p, &mut d);
                    warn_no_room_to_burst(&settings, &p, &mut d);
                    plan_placement(m, &settings, &p);
                    if let Some(region) = m.router_region.as_str()
                        && let Err(e) = fabrics::for_region(&ctx.config.fabrics, region)
                    {
                        d.push(Diagnostic::error(
                            "No fabric daemon for the endpoint's region",
                            e,
                        ));
                    }
                    let daemon = m
                        .router_region
                        .as_str()
                        .and_then(|r| fabrics::for_region(&ctx.config.fabrics, r).ok().flatten());
                    if daemon.is_none() {
                        warn_embedded_slurm(&p, &mut d);
                    }
                    // The daemon's address only fills in Slurm pools' join URLs: any well-formed
                    // one validates the same.
                    let daemon_url = daemon
                        .map_or("http://127.0.0.1", |t| t.address.as_str())
                        .to_string();
                    if !d.has_errors()
                        && let Ok(config) = fabric_config(ctx, &settings, &p, &daemon_url)
                        && let Err(e) = config.validate("")
                    {
                        // The router would refuse this config: say so now, not at apply.
                        d.push(Diagnostic::error(
                            "The endpoint's router config is invalid",
                            e.to_string(),
                        ));
                    }
                }
                None => {
                    m.serving_regions = Attr::Unknown;
                    m.spill_order = Attr::Unknown;
                    m.router_region = Attr::Unknown;
                    m.monthly_cost_min_usd = Attr::Unknown;
                    m.monthly_cost_max_usd = Attr::Unknown;
                    m.placement_digest = Attr::Unknown;
                }
            }
            if d.has_errors() {
                return Err(d);
            }
            let Some(prior) = &prior else {
                return Ok(d);
            };
            let listen = settings.listen.known();
            let port = listen.and_then(|l| l.port.get());
            if needs_apply(prior, m) {
                m.replicas_status = Attr::Unknown;
                m.fabric_etag = Attr::Unknown;
                // A router that must (re)start on a port the OS picks gets a new URL.
                if router_restarts(prior, m) && port.unwrap_or(0) == 0 {
                    m.url = Attr::Unknown;
                }
            }
            if let Some(port) = port
                && port != 0
                && let Some(host) = listen.and_then(|l| l.host.as_str())
                && let Some(name) = m.name.as_str()
            {
                m.url = Attr::Known(model_url(
                    &format!("{host}:{port}"),
                    name,
                    m.tls.known().is_some(),
                ));
            }
            Ok(d)
        })
    }

    async fn apply(&self, ctx: &Ctx, prior: Value, planned: Value) -> Applied {
        let decoded = models::decode_object::<Model>(&prior)
            .and_then(|p| Ok((p, models::decode_object::<Model>(&planned)?)));
        let (prior_model, planned) = match decoded {
            Ok(models) => models,
            Err(d) => {
                return Applied {
                    state: prior,
                    diagnostics: d,
                };
            }
        };
        let name = planned
            .as_ref()
            .or(prior_model.as_ref())
            .and_then(|m| m.name.as_str())
            .unwrap_or_default()
            .to_string();
        let region = planned
            .as_ref()
            .or(prior_model.as_ref())
            .and_then(|m| m.router_region.as_str())
            .unwrap_or_default()
            .to_string();
        let (target, embedded) = match daemon_for(ctx, &region).await {
            Ok(t) => t,
            Err(d) => {
                return Applied {
                    state: prior,
                    diagnostics: d.into(),
                };
            }
        };
        let Some(planned) = planned else {
            return hosted::destroy(&target, &name, prior).await;
        };
        // A router moved to another region's daemon leaves the old one first; the new daemon
        // has never seen the endpoint, so the create there is unconditional.
        let mut prior_model = prior_model;
        if let Some(old_region) = prior_model
            .as_ref()
            .and_then(|m| m.router_region.as_str())
            .filter(|r| *r != region)
        {
            let old = match daemon_for(ctx, old_region).await {
                Ok((old, _)) => old,
                Err(d) => {
                    return Applied {
                        state: prior,
                        diagnostics: d.into(),
                    };
                }
            };
            if old.address != target.address {
                let moved = hosted::destroy(&old, &name, prior.clone()).await;
                if moved.diagnostics.has_errors() {
                    return moved;
                }
                prior_model = None;
            }
        }
        let settings = match effective(&planned) {
            Ok(s) => s,
            Err(d) => {
                return Applied {
                    state: prior,
                    diagnostics: d,
                };
            }
        };
        let config = match resolve_placement(ctx, &planned)
            .filter(|p| p.missing.is_empty())
            .ok_or_else(|| "the endpoint's pools or burst policy are not known".to_string())
            .and_then(|p| fabric_config(ctx, &settings, &p, &target.address))
        {
            Ok(c) => c,
            Err(e) => return failed(prior, "Cannot configure the endpoint's router", e),
        };
        let applied = hosted::apply(
            &target,
            &config,
            prior,
            prior_model.as_ref(),
            planned,
            self.state_type(),
        )
        .await;
        if embedded && !applied.diagnostics.has_errors() {
            // On this host the endpoint's directory keeps its state too, for `terraform import`.
            let dir = EndpointDir::new(&ctx.config.state_dir, &name);
            if let Some(json) = applied.state.to_json()
                && let Err(e) = store::write_json(&dir.state(), &json)
            {
                return Applied {
                    state: applied.state,
                    diagnostics: Diagnostic::error(
                        "Cannot record the endpoint",
                        format!("{}: {e}", dir.state().display()),
                    )
                    .into(),
                };
            }
        }
        applied
    }

    async fn read(&self, ctx: &Ctx, state: Value) -> Result<Value, Diagnostics> {
        let m: Model = models::decode(&state)?;
        let region = m.router_region.as_str().unwrap_or_default().to_string();
        let (target, _) = daemon_for(ctx, &region).await?;
        hosted::read(&target, m, self.state_type()).await
    }

    async fn import(&self, ctx: &Ctx, name: &str) -> Result<Value, Diagnostics> {
        if !ctx.config.fabrics.is_empty() {
            return Err(Diagnostic::error(
                "Import is not supported with fabric daemons",
                "an endpoint hosted by a fabric daemon cannot be imported yet; apply its configuration instead: the PUT is idempotent, so an endpoint already hosted with the same config is left as it is",
            )
            .into());
        }
        let dir = EndpointDir::new(&ctx.config.state_dir, name);
        let recorded: Option<serde_json::Value> = store::read_json(&dir.state())
            .map_err(|e| Diagnostic::error("Cannot read the endpoint's record", e.to_string()))?;
        let Some(json) = recorded else {
            return Err(Diagnostic::error(
                "Nothing to import",
                format!(
                    "no gpucap_inference_endpoint named {name:?} is recorded in {}; import takes the endpoint's name",
                    ctx.config.state_dir.display()
                ),
            )
            .into());
        };
        let state = Value::from_json(&json, self.state_type()).map_err(|e| {
            Diagnostics::from(Diagnostic::error(
                "The endpoint's record does not match the schema",
                e.to_string(),
            ))
        })?;
        self.read(ctx, state).await
    }
}

/// The daemon hosting routers of `region`, and whether it is this host's embedded one.
async fn daemon_for(ctx: &Ctx, region: &str) -> Result<(FabricTarget, bool), Diagnostic> {
    match fabrics::for_region(&ctx.config.fabrics, region) {
        Ok(Some(target)) => Ok((target.clone(), false)),
        Ok(None) => Ok((embedded::target(&ctx.config).await?, true)),
        Err(e) => Err(Diagnostic::error(
            "No fabric daemon for the endpoint's region",
            e,
        )),
    }
}

/// The settings a model stands for, with the schema's defaults for what it leaves unset.
fn effective(m: &Model) -> Result<Model, Diagnostics> {
    let value = models::encode(m, InferenceEndpoint.state_type())?;
    models::decode_effective(&model::schema().block, &value)
}

fn failed(state: Value, summary: &str, detail: impl std::fmt::Display) -> Applied {
    Applied {
        state,
        diagnostics: Diagnostic::error(summary, detail.to_string()).into(),
    }
}

/// `replicas.min` and `replicas.max` of the endpoint's settings ([`effective`]).
fn replica_bounds(settings: &Model) -> (Option<i64>, Option<i64>) {
    match settings.replicas.known() {
        Some(r) => (r.min.get(), r.max.get()),
        None => (None, None),
    }
}

fn model_url(address: &str, name: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{address}/v2/models/{name}")
}

/// `[auth]` from the `auth` block.
fn auth_section(settings: &Model) -> AuthSection {
    let mode = settings
        .auth
        .known()
        .and_then(|a| a.mode.as_str())
        .unwrap_or("none");
    AuthSection {
        mode: if mode == "api_key" {
            AuthMode::ApiKey
        } else {
            AuthMode::None
        },
        keys_file: None,
    }
}

/// `[tls]` from the `tls` block: its files, made absolute.
fn tls_section(settings: &Model) -> Result<Option<TlsSection>, String> {
    let Some(tls) = settings.tls.known() else {
        return Ok(None);
    };
    let file = |a: &Attr<String>, what: &str| -> Result<Option<std::path::PathBuf>, String> {
        a.as_str()
            .map(|p| std::path::absolute(p).map_err(|e| format!("tls.{what} {p}: {e}")))
            .transpose()
    };
    Ok(Some(TlsSection {
        cert_file: file(&tls.cert_file, "cert_file")?.ok_or("tls.cert_file is not known")?,
        key_file: file(&tls.key_file, "key_file")?.ok_or("tls.key_file is not known")?,
        client_ca_file: file(&tls.client_ca_file, "client_ca_file")?,
    }))
}

/// Warns of an endpoint anyone on the network may call; checks the TLS files where the plan
/// runs (where the embedded daemon runs the router too).
fn check_gateway(m: &Model, d: &mut Diagnostics) {
    let open = m
        .auth
        .known()
        .and_then(|a| a.mode.as_str())
        .is_none_or(|mode| mode == "none");
    if open
        && let Some(host) = m.listen.known().and_then(|l| l.host.as_str())
        && !fabrics::is_loopback(host)
    {
        d.push(Diagnostic::attr_warning(
            "auth.mode",
            "An open endpoint beyond loopback",
            format!(
                "the router listens on {host} with auth.mode = \"none\": anyone who reaches it may call the model. Set auth {{ mode = \"api_key\" }} and give callers gpucap_api_key secrets, or listen on 127.0.0.1."
            ),
        ));
    }
    let Some(tls) = m.tls.known() else {
        return;
    };
    for (what, attr) in [
        ("cert_file", &tls.cert_file),
        ("key_file", &tls.key_file),
        ("client_ca_file", &tls.client_ca_file),
    ] {
        if let Some(path) = attr.as_str()
            && let Err(e) = std::fs::File::open(path)
        {
            d.push(Diagnostic::attr_error(
                &format!("tls.{what}"),
                "Cannot read a TLS file",
                format!("{path}: {e}"),
            ));
        }
    }
}

/// Whether applying the plan must touch the router: what it serves or how changed, or it is down.
fn needs_apply(prior: &Model, planned: &Model) -> bool {
    prior.model != planned.model
        || prior.model_sha256 != planned.model_sha256
        || prior.batching != planned.batching
        || prior.replicas != planned.replicas
        || prior.data_residency != planned.data_residency
        || prior.listen != planned.listen
        || prior.auth != planned.auth
        || prior.tls != planned.tls
        || prior.placement_digest != planned.placement_digest
        || router_restarts(prior, planned)
}

/// Whether the router must (re)start rather than reload: its address changed, or it is down.
fn router_restarts(prior: &Model, planned: &Model) -> bool {
    prior.listen != planned.listen
        || prior.tls.known().is_some() != planned.tls.known().is_some()
        || prior
            .replicas_status
            .as_str()
            .is_none_or(|s| s.starts_with("router not"))
}

/// Checks the model file now, so a missing or invalid model fails the plan, and hashes it.
fn plan_model(m: &mut Model, d: &mut Diagnostics) {
    let Some(path) = m
        .model
        .known()
        .and_then(|b| b.path.as_str())
        .map(str::to_string)
    else {
        m.model_sha256 = Attr::Unknown;
        m.model_signature = Attr::Unknown;
        return;
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            d.push(Diagnostic::attr_error(
                "model.path",
                "Cannot read the model",
                format!("{path}: {e}"),
            ));
            return;
        }
    };
    let file = match gpucap_fabric::config::read_model_file(std::path::Path::new(&path), &bytes) {
        Ok(file) => file,
        Err(e) => {
            d.push(Diagnostic::attr_error(
                "model.path",
                "Invalid model file",
                format!("{path}: {e}"),
            ));
            return;
        }
    };
    // Unknown until apply, when the runtime checks it; the schema's default when left out.
    let max_batch_size = match m.batching.known().map(|b| &b.max_batch_size) {
        Some(Attr::Known(n)) => usize::try_from(*n).ok(),
        Some(Attr::Unknown) => None,
        _ => Some(64),
    };
    if let Some(max_batch_size) = max_batch_size
        && let Err(e) = file.check_batch_size(max_batch_size)
    {
        d.push(Diagnostic::attr_error(
            "batching.max_batch_size",
            "The model cannot batch",
            format!("{path}: {e}"),
        ));
        return;
    }
    m.model_signature = Attr::Known(file.signature().to_string());
    m.model_sha256 = Attr::Known(hex::encode(Sha256::digest(&bytes)));
}

/// The endpoint's placement; `None` while its burst policy or pools are unknown.
fn resolve_placement(ctx: &Ctx, m: &Model) -> Option<Placement> {
    let dir = &ctx.config.state_dir;
    let pool = |n: &str| ctx.registry.pool(dir, n);
    let policy = |n: &str| ctx.registry.burst_policy(dir, n);
    match &m.burst_policy {
        Attr::Unknown => None,
        Attr::Known(name) => Some(placement::resolve(
            Source::Policy(name),
            policy,
            BurstPolicyInfo::pools,
            pool,
        )),
        Attr::Null => {
            let names: Vec<String> = match &m.pools {
                Attr::Null => Vec::new(),
                names => names.all_known()?.into_iter().cloned().collect(),
            };
            Some(placement::resolve(
                Source::Pools(&names),
                policy,
                BurstPolicyInfo::pools,
                pool,
            ))
        }
    }
}

/// Names the placement could not resolve, as errors on the attribute that leads to them.
fn report_missing(ctx: &Ctx, m: &Model, p: &Placement, d: &mut Diagnostics) {
    for missing in &p.missing {
        match missing {
            Missing::Policy(name) => d.push(Diagnostic::attr_error(
                "burst_policy",
                "Unknown burst policy",
                format!(
                    "no gpucap_burst_policy named {name:?} exists or is planned. Reference the policy's name \
                     attribute, e.g. burst_policy = gpucap_burst_policy.{name}.name, so that Terraform plans it first"
                ),
            )),
            Missing::Pool { path, name } => {
                let attr = if m.burst_policy.is_null() {
                    path.as_str()
                } else {
                    "burst_policy"
                };
                d.push(unknown_pool(ctx, attr, name));
            }
        }
    }
}

/// Residency: every pool the endpoint can ever run on lies in its allowed regions and
/// jurisdictions (the router, in the first base pool's region, with them).
fn check_residency(settings: &Model, p: &Placement, d: &mut Diagnostics) {
    let residency = residency(settings);
    for pool in p.all() {
        let role = match &p.policy {
            Some(policy) if policy.burst_pools.contains(&pool.name) => {
                format!(" (a burst pool of policy {:?})", policy.name)
            }
            Some(policy) => format!(" (a base pool of policy {:?})", policy.name),
            None => String::new(),
        };
        for breach in residency.breaches(pool) {
            let (attr, allowed) = match breach {
                placement::Breach::Jurisdiction => (
                    "data_residency.allowed_jurisdictions",
                    residency.allowed_jurisdictions.clone().unwrap_or_default(),
                ),
                placement::Breach::Region => (
                    "data_residency.allowed_regions",
                    residency.allowed_regions.clone().unwrap_or_default(),
                ),
            };
            let detail = match breach {
                placement::Breach::Jurisdiction => format!(
                    "pool {:?}{role} is in region {:?}, jurisdiction {:?}, but this endpoint's data may only be processed in {}. \
                     Remove the pool from the endpoint's placement or allow its jurisdiction.",
                    pool.name,
                    pool.region,
                    pool.jurisdiction,
                    allowed.join(", ")
                ),
                placement::Breach::Region => format!(
                    "pool {:?}{role} is in region {:?}, but this endpoint may only run in regions {}. \
                     Remove the pool from the endpoint's placement or allow its region.",
                    pool.name,
                    pool.region,
                    allowed.join(", ")
                ),
            };
            d.push(Diagnostic::attr_error(attr, "Residency violation", detail));
        }
    }
}

/// The endpoint's `data_residency` restrictions: the names known so far of each list it sets.
fn residency(settings: &Model) -> Residency {
    let r = settings.data_residency.known();
    let list = |names: &Names| -> Option<Vec<String>> {
        names
            .known()
            .map(|l| l.iter().filter_map(|n| n.known().cloned()).collect())
    };
    Residency {
        allowed_jurisdictions: r.and_then(|r| list(&r.allowed_jurisdictions)),
        allowed_regions: r.and_then(|r| list(&r.allowed_regions)),
    }
}

/// Capacity: the minimum replicas of every endpoint on these base pools fit their maximum GPUs.
fn check_capacity(ctx: &Ctx, settings: &Model, p: &Placement, d: &mut Diagnostics) {
    let (Some(name), (Some(min), _)) = (settings.name.as_str(), replica_bounds(settings)) else {
        return;
    };
    let names: Vec<String> = p.base.iter().map(|b| b.name.clone()).collect();
    let demand = ctx.registry.put_demand(name, names.clone(), min);
    let capacity: i64 = p.base.iter().map(|b| b.gpus_max).sum();
    if demand > capacity {
        d.push(Diagnostic::attr_error(
            "replicas.min",
            "Not enough capacity",
            format!(
                "endpoints on base pools {} need {demand} replicas at minimum, but those pools have at most {capacity} GPU{} \
                 (one replica per GPU). Lower replicas.min or raise the pools' nodes.max.",
                names.join(", "),
                if capacity == 1 { "" } else { "s" }
            ),
        ));
    }
}

/// Every pool must be reachable by a driver the fabric has.
fn check_drivers(p: &Placement, d: &mut Diagnostics) {
    for pool in p.all().filter(|pool| {
        pool.local_devices.is_none() && pool.aws_group.is_none() && pool.slurm.is_none()
    }) {
        d.push(Diagnostic::attr_error(
            if p.policy.is_some() { "burst_policy" } else { "pools" },
            "No driver can deploy to this pool",
            format!(
                "pool {:?} has no driver block the fabric can deploy with (local, aws_autoscaling_group or slurm)",
                pool.name
            ),
        ));
    }
}

/// Slurm jobs run on the cluster's nodes and dial the router; without a `fabric` block the
/// router is this host's embedded daemon, which listens on loopback only.
fn warn_embedded_slurm(p: &Placement, d: &mut Diagnostics) {
    let slurm: Vec<&str> = p
        .all()
        .filter(|pool| pool.slurm.is_some())
        .map(|pool| pool.name.as_str())
        .collect();
    if slurm.is_empty() {
        return;
    }
    d.push(Diagnostic::attr_warning(
        if p.policy.is_some() { "burst_policy" } else { "pools" },
        "Slurm jobs join a router on this host's loopback",
        format!(
            "pool(s) {} run replicas as Slurm jobs, which dial the endpoint's router; with no `fabric` block the router runs on this host's embedded daemon, which listens on 127.0.0.1, so only jobs that run on this host can join. Give the provider a `fabric` block for a daemon the cluster's nodes reach",
            slurm.join(", ")
        ),
    ));
}

/// Burst pools that `replicas.max` leaves no room for are a configuration mistake worth a word.
fn warn_no_room_to_burst(settings: &Model, p: &Placement, d: &mut Diagnostics) {
    let (_, Some(max)) = replica_bounds(settings) else {
        return;
    };
    let base: i64 = p.base.iter().map(|b| b.gpus_max).sum();
    if !p.burst.is_empty() && max <= base {
        d.push(Diagnostic::attr_warning(
            "replicas.max",
            "No room to burst",
            format!(
                "replicas.max = {max} fits on the base pools ({base} GPU(s)), so the burst pools ({}) are never used; \
                 raise replicas.max to let load spill to them",
                p.burst.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
}

/// Regions, costs, the router's region and the placement digest: all known at plan time.
fn plan_placement(m: &mut Model, settings: &Model, p: &Placement) {
    let mut regions: Vec<String> = Vec::new();
    for pool in p.all() {
        if !regions.contains(&pool.region) {
            regions.push(pool.region.clone());
        }
    }
    let names = |items: Vec<String>| Attr::Known(items.into_iter().map(Attr::Known).collect());
    m.serving_regions = names(regions);
    m.spill_order = names(p.all().map(|pool| pool.name.clone()).collect());
    m.router_region = p.base.first().map(|b| b.region.clone()).into();
    let digest_input = json!({
        "base": p.base,
        "burst": p.burst,
        "policy": p.policy,
    });
    m.placement_digest = Attr::Known(hex::encode(Sha256::digest(
        digest_input.to_string().as_bytes(),
    )));

    let base: Vec<_> = p.base.iter().map(PoolInfo::cost).collect();
    let burst: Vec<_> = p.burst.iter().map(PoolInfo::cost).collect();
    let budget = p
        .policy
        .as_ref()
        .and_then(BurstPolicyInfo::budget_max_hourly_usd);
    (m.monthly_cost_min_usd, m.monthly_cost_max_usd) = match replica_bounds(settings) {
        (Some(min), Some(max)) => {
            gpucap_policy::cost::endpoint_monthly(min, max, &base, &burst, budget)
                .map_or((Attr::Null, Attr::Null), |(lo, hi)| {
                    (Attr::Known(lo), Attr::Known(hi))
                })
        }
        _ => (Attr::Unknown, Attr::Unknown),
    };
}

/// The router config for an endpoint's settings ([`effective`]): what it serves, its batching,
/// bounds, residency, policy and pools. An error names what is not known yet.
/// `daemon_url` is the daemon that will host the router.
fn fabric_config(
    ctx: &Ctx,
    settings: &Model,
    p: &Placement,
    daemon_url: &str,
) -> Result<FabricConfig, String> {
    let known = |what: &str| format!("{what} is not known");
    let model = settings.model.known().ok_or_else(|| known("model"))?;
    let path = model.path.as_str().ok_or_else(|| known("model.path"))?;
    let path = std::path::absolute(path).map_err(|e| format!("model.path {path}: {e}"))?;
    let name = settings.name.as_str().ok_or_else(|| known("name"))?;
    let batching = settings.batching.known().ok_or_else(|| known("batching"))?;
    let count = |a: &Attr<i64>, what: &str| -> Result<u64, String> {
        a.get()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| known(what))
    };
    let listen = settings.listen.known().ok_or_else(|| known("listen"))?;
    let (min, max) = match replica_bounds(settings) {
        (Some(min), Some(max)) => (min, max),
        _ => return Err(known("replicas")),
    };
    // The placement, resolved here once: pools in spill order with their roles.
    let roles = p
        .base
        .iter()
        .map(|b| (b, false))
        .chain(p.burst.iter().map(|b| (b, true)));
    let site = RouterSite {
        endpoint: name,
        aws: &ctx.config.aws,
        daemon_url,
    };
    let pools = roles
        .map(|(pool, burst)| {
            pool.to_section(burst, &site)
                .ok_or_else(|| format!("pool {:?} has no driver the fabric can use", pool.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let residency = residency(settings);
    Ok(FabricConfig {
        endpoint: EndpointSection::new(
            name,
            format!(
                "{}:{}",
                listen.host.as_str().ok_or_else(|| known("listen.host"))?,
                count(&listen.port, "listen.port")?
            ),
        ),
        model: ModelSection {
            path,
            version: model
                .version
                .as_str()
                .ok_or_else(|| known("model.version"))?
                .to_string(),
        },
        batching: BatchingSection {
            max_batch_size: count(&batching.max_batch_size, "batching.max_batch_size")? as usize,
            max_queue_delay_us: count(&batching.max_queue_delay_us, "batching.max_queue_delay_us")?,
            queue_capacity: count(&batching.queue_capacity, "batching.queue_capacity")? as usize,
            request_timeout_ms: count(&batching.request_timeout_ms, "batching.request_timeout_ms")?,
        },
        replicas: ReplicasSection {
            min: min.max(0) as usize,
            max: max.max(1) as usize,
        },
        residency: ResidencySection {
            allowed_jurisdictions: residency.allowed_jurisdictions,
            allowed_regions: residency.allowed_regions,
        },
        policy: p.policy.as_ref().map(|pol| pol.section.clone()),
        pools,
        runtime: RuntimeSection {
            path: ctx.config.runtime_path.clone(),
        },
        state: StateSection {
            dir: EndpointDir::new(&ctx.config.state_dir, name).0,
            // Every endpoint deployed from this state_dir shares its pools' slots.
            ledger_dir: Some(store::kind_dir(&ctx.config.state_dir, "ledger")),
        },
        auth: auth_section(settings),
        tls: tls_section(settings)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use crate::testing::{Harness, digits_model, errors};

    /// A base pool in Frankfurt (one CPU "GPU") and a spot burst pool in Virginia, with policy
    /// `spill` between them: the configuration of the residency and capacity acceptance tests.
    fn frankfurt_and_virginia() -> Harness {
        let h = Harness::new();
        h.plan_create(
            "gpucap_gpu_pool",
            json!({"name": "frankfurt", "region": "eu-central-1", "gpu": {"model": "cpu"},
                   "nodes": {"max": 1}, "local": {}}),
        )
        .expect("frankfurt");
        h.plan_create(
            "gpucap_gpu_pool",
            json!({"name": "virginia", "region": "us-east-1", "capacity_type": "spot",
                   "gpu": {"model": "cpu"}, "nodes": {"max": 4}, "local": {}}),
        )
        .expect("virginia");
        h.plan_create(
            "gpucap_burst_policy",
            json!({"name": "spill", "base_pools": ["frankfurt"], "burst_pools": ["virginia"]}),
        )
        .expect("spill");
        h
    }

    fn endpoint(extra: Json) -> Json {
        let mut e = json!({"name": "fraud", "burst_policy": "spill",
                           "model": {"path": digits_model().display().to_string()}});
        if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
            e.extend(extra.clone());
        }
        e
    }

    #[test]
    fn residency_violations_name_the_pool_region_and_attribute() {
        let h = frankfurt_and_virginia();
        let d = h
            .plan_create(
                "gpucap_inference_endpoint",
                endpoint(json!({"data_residency": {"classification": "pii",
                    "allowed_jurisdictions": ["EU"], "allowed_regions": ["eu-central-1"]}})),
            )
            .expect_err("virginia is outside the EU");
        let text = errors(&d);
        assert!(
            text.contains(r#"pool "virginia" (a burst pool of policy "spill") is in region "us-east-1", jurisdiction "US""#),
            "{text}"
        );
        let paths: Vec<String> =
            d.0.iter()
                .filter_map(|d| d.path.as_ref())
                .map(ToString::to_string)
                .collect();
        assert!(
            paths.iter().any(|p| p.contains("allowed_jurisdictions")),
            "{paths:?}"
        );
        assert!(
            paths.iter().any(|p| p.contains("allowed_regions")),
            "{paths:?}"
        );
        assert!(
            !h.state_dir().join("endpoints/fraud").exists(),
            "nothing may exist after a failed plan"
        );
    }

    #[test]
    fn the_base_pools_must_hold_the_minimum_replicas() {
        let h = frankfurt_and_virginia();
        let d = h
            .plan_create(
                "gpucap_inference_endpoint",
                endpoint(json!({"replicas": {"min": 2, "max": 2},
                    "data_residency": {"allowed_jurisdictions": ["EU", "US"]}})),
            )
            .expect_err("one GPU cannot hold two replicas");
        let text = errors(&d);
        assert!(text.contains("Not enough capacity"), "{text}");
        assert!(text.contains("need 2 replicas at minimum"), "{text}");
    }

    #[test]
    fn an_allowed_placement_plans_its_spill_order() {
        let h = frankfurt_and_virginia();
        let planned = h
            .plan_create(
                "gpucap_inference_endpoint",
                endpoint(json!({"data_residency": {"allowed_jurisdictions": ["EU", "US"]}})),
            )
            .expect("plan");
        let s = &planned.state;
        let order: Vec<&str> = s
            .get("spill_order")
            .as_list()
            .expect("spill order known at plan")
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        assert_eq!(order, ["frankfurt", "virginia"]);
        assert!(s.get("url").is_unknown(), "the URL is decided by apply");
        assert!(s.get("placement_digest").as_str().is_some());
    }
}
