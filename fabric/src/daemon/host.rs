//! The endpoints a daemon hosts. Each runs as its own router process (`gpucap-fabric serve`),
//! started through [`crate::deploy`], so a bad model or a failing driver in one endpoint never
//! reaches another, and a daemon that dies or is upgraded leaves every endpoint serving. The
//! daemon records each endpoint's config under `state_dir/endpoints/NAME/hosted.json`, adopts
//! running routers when it starts, and restarts a router that died on the address it had, so
//! the endpoint's URL never changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

use super::wire::{EndpointView, Problem, RouterView};
use crate::config::FabricConfig;
use crate::deploy::{self, DeployError, EndpointDir, RouterHealth};
use crate::ledger::Ledger;
use crate::store;

/// The state directory's layout version this binary writes; it refuses newer ones.
pub const STATE_FORMAT: u32 = 1;

/// How long a router restart waits after each failure in a row, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the daemon records of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostedRecord {
    /// The config as the client sent it.
    pub config: FabricConfig,
    /// Its digest.
    pub etag: String,
    /// The address its router listened on last: a restarted router takes it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One hosted endpoint.
pub(super) struct Hosted {
    pub(super) dir: EndpointDir,
    /// Held by whatever changes the endpoint (an API call, a restart), one at a time.
    busy: Arc<tokio::sync::Mutex<()>>,
    life: Mutex<Life>,
}

#[derive(Default)]
struct Life {
    record: Option<HostedRecord>,
    /// A DELETE began: supervision leaves it alone, even if the DELETE failed.
    deleting: bool,
    restarts: u64,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// Where the daemon's binaries and records are, and what it serves.
#[derive(Debug, Clone)]
pub struct Site {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The region it serves; every region when unset.
    pub region: Option<String>,
    /// Its jurisdiction; unknown when it serves every region.
    pub jurisdiction: Option<String>,
    /// `gpucap-fabric`, which routers run.
    pub fabric_bin: PathBuf,
    /// `gpucap-runtime`, which replicas run.
    pub runtime_bin: PathBuf,
}

/// Every endpoint a daemon hosts.
pub struct Host {
    site: Site,
    ledger: Ledger,
    endpoints: Mutex<BTreeMap<String, Arc<Hosted>>>,
}

/// The outcome of a `PUT`.
pub enum Put {
    /// A new endpoint.
    Created(EndpointView),
    /// An endpoint whose config changed.
    Replaced(EndpointView),
    /// The config in force already.
    Unchanged(EndpointView),
}

#[derive(Serialize, Deserialize)]
struct StateFormat {
    format: u32,
}

impl Host {
    /// Opens the state directory (refusing one a newer version wrote) and loads every endpoint
    /// recorded there. Nothing is started: [`Host::supervise`] adopts or restarts routers.
    pub fn open(site: Site) -> Result<Host, String> {
        let dir = &site.state_dir.clone();
        std::fs::create_dir_all(dir).map_err(|e| format!("state_dir {}: {e}", dir.display()))?;
        let format_file = dir.join("daemon-state.json");
        match store::read_json::<StateFormat>(&format_file) {
            Ok(Some(f)) if f.format > STATE_FORMAT => {
                return Err(format!(
                    "state_dir {} was written by a newer gpucap-fabric (state format {}); this one reads format {STATE_FORMAT}: run the newer binary, or restore a backup",
                    dir.display(),
                    f.format
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("state_dir: {e}")),
        }
        store::write_json(
            &format_file,
            &StateFormat {
                format: STATE_FORMAT,
            },
        )
        .map_err(|e| format!("cannot write {}: {e}", format_file.display()))?;
        let host = Host {
            ledger: Ledger::new(&store::kind_dir(dir, "ledger")),
            site,
            endpoints: Mutex::default(),
        };
        let endpoints_dir = store::kind_dir(dir, "endpoints");
        let names: Vec<String> = std::fs::read_dir(&endpoints_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        for name in names {
            let hosted = host.hosted(&name);
            match store::read_json::<HostedRecord>(&hosted.dir.0.join("hosted.json")) {
                Ok(Some(record)) => lock(&hosted.life).record = Some(record),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(endpoint = %name, error = %e, "cannot read the endpoint's record; it is not served until it is applied again");
                    lock(&hosted.life).last_error = Some(e.to_string());
                }
            }
        }
        Ok(host)
    }

    /// The site this host serves.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The pool ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn hosted(&self, name: &str) -> Arc<Hosted> {
        lock(&self.endpoints)
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Hosted {
                    dir: EndpointDir::new(&self.site.state_dir, name),
                    busy: Arc::default(),
                    life: Mutex::default(),
                })
            })
            .clone()
    }

    /// The endpoint's entry, locked. After the wait for the lock the entry must still be the
    /// one in the map (a DELETE may have removed it meanwhile), or the wait starts again on the
    /// entry there now.
    pub(super) async fn lock_current(&self, name: &str) -> (Arc<Hosted>, OwnedMutexGuard<()>) {
        loop {
            let hosted = self.hosted(name);
            let guard = hosted.busy.clone().lock_owned().await;
            let current = lock(&self.endpoints)
                .get(name)
                .is_some_and(|h| Arc::ptr_eq(h, &hosted));
            if current {
                return (hosted, guard);
            }
        }
    }

    /// Refuses a config whose minimums, with those of the other endpoints on its pools, need
    /// more slots than a pool has: its router would wait for slots that never come free.
    fn check_minimums_fit(&self, name: &str, config: &FabricConfig) -> Result<(), Problem> {
        let fabric = config.validate("").map_err(|e| {
            Problem::new(422, "invalid-config", "Invalid endpoint config", e.message).at(e.field)
        })?;
        let books = self.ledger.books().map_err(internal)?;
        let wanted = crate::ledger::reservations(&fabric.pools, fabric.scaling.replicas_min);
        for (pool, ours) in fabric.pools.iter().zip(wanted).filter(|(_, r)| *r > 0) {
            let others: Vec<(String, usize)> = books
                .iter()
                .filter(|(p, _)| *p == pool.name)
                .flat_map(|(_, b)| b.reserved.iter())
                .filter(|(e, _)| e.as_str() != name)
                .map(|(e, r)| (e.clone(), *r))
                .collect();
            let kept: usize = others.iter().map(|(_, r)| r).sum();
            if kept + ours > pool.slots {
                let who: Vec<String> = others.iter().map(|(e, r)| format!("{e} {r}")).collect();
                return Err(Problem::new(
                    409,
                    "pool-full",
                    "The minimums do not fit the pool",
                    format!(
                        "pool {:?} has {} slots; other endpoints keep {kept} for their replicas.min ({}), and this one needs {ours}",
                        pool.name,
                        pool.slots,
                        who.join(", ")
                    ),
                )
                .at("replicas.min"));
            }
        }
        Ok(())
    }

    pub(super) fn existing(&self, name: &str) -> Option<Arc<Hosted>> {
        let hosted = lock(&self.endpoints).get(name).cloned()?;
        let known = lock(&hosted.life).record.is_some();
        known.then_some(hosted)
    }

    /// The address joins to an endpoint are passed to (its router's operator listener), as
    /// soon as it listens: replicas join while it converges (its minimum may be theirs to
    /// provide).
    pub fn router_address(&self, name: &str) -> Option<String> {
        // Not only endpoints already created: one being created may wait on joined replicas.
        let hosted = lock(&self.endpoints).get(name).cloned()?;
        let record = deploy::complete_record(&hosted.dir).ok().flatten()?;
        (record.process.alive() && !record.address.is_empty())
            .then(|| record.status_address().to_string())
    }

    /// Names of the endpoints hosted.
    pub fn names(&self) -> Vec<String> {
        lock(&self.endpoints)
            .iter()
            .filter(|(_, h)| lock(&h.life).record.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Checks a config sent for endpoint `name` and makes it this host's: the paths it names
    /// on this host are the daemon's, whatever the client wrote. Problems name the key.
    pub fn prepare(&self, name: &str, mut config: FabricConfig) -> Result<FabricConfig, Problem> {
        let invalid = |field: &str, detail: String| {
            Problem::new(422, "invalid-config", "Invalid endpoint config", detail).at(field)
        };
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(invalid(
                "endpoint.name",
                format!("{name:?} is not a valid name; start it with a letter or a digit"),
            ));
        }
        if config.endpoint.name != name {
            return Err(invalid(
                "endpoint.name",
                format!(
                    "{:?} does not match the endpoint in the URL, {name:?}",
                    config.endpoint.name
                ),
            ));
        }
        let dir = EndpointDir::new(&self.site.state_dir, name);
        config.state.dir = dir.0.clone();
        config.state.ledger_dir = Some(store::kind_dir(&self.site.state_dir, "ledger"));
        config.runtime.path = self.site.runtime_bin.clone();
        for pool in &mut config.pools {
            if let Some(local) = &mut pool.local {
                local.runtime_path = None;
            }
        }
        let fabric = config
            .validate("")
            .map_err(|e| invalid(&e.field, e.message))?;
        if let Some(region) = &self.site.region
            && fabric.router_region != *region
        {
            return Err(Problem::new(
                422,
                "wrong-region",
                "The endpoint's router belongs to another region",
                format!(
                    "its router region is {:?}, and this daemon serves {region:?}; send it to the daemon of {:?}",
                    fabric.router_region, fabric.router_region
                ),
            )
            .at("endpoint.router_region"));
        }
        if let Some(allowed) = &config.residency.allowed_jurisdictions
            && let Some(here) = &self.site.jurisdiction
            && !allowed.contains(here)
        {
            return Err(Problem::new(
                422,
                "residency",
                "The endpoint's residency excludes this daemon",
                format!(
                    "the router processes the endpoint's data on this host, in jurisdiction {here:?}, which is not one of {}",
                    allowed.join(", ")
                ),
            )
            .at("residency.allowed_jurisdictions"));
        }
        let bytes = std::fs::read(&fabric.model_path).map_err(|e| {
            invalid(
                "model.path",
                format!(
                    "{} on the daemon's host: {e}; the model file must be readable there",
                    fabric.model_path.display()
                ),
            )
        })?;
        crate::config::check_model(&fabric.model_path, &bytes, fabric.batching.max_batch_size)
            .map_err(|e| {
                invalid(
                    "model.path",
                    format!("{}: {e}", fabric.model_path.display()),
                )
            })?;
        Ok(config)
    }

    /// Creates or replaces endpoint `name` with a prepared `config` whose digest is `etag`,
    /// under the client's preconditions (`If-Match`, `If-None-Match: *`); returns once its
    /// router serves it with its minimum replicas ready.
    pub async fn put(
        &self,
        name: &str,
        config: FabricConfig,
        etag: String,
        if_match: Option<&str>,
        create_only: bool,
        cancel: &CancellationToken,
    ) -> Result<Put, Problem> {
        let (hosted, _busy) = self.lock_current(name).await;
        let prior = lock(&hosted.life).record.clone();
        match (&prior, if_match) {
            (Some(_), _) if create_only => {
                return Err(Problem::new(
                    412,
                    "exists",
                    "The endpoint exists",
                    format!(
                        "endpoint {name:?} exists and If-None-Match: * asked to create it only"
                    ),
                )
                .at("If-None-Match"));
            }
            (Some(p), Some(m)) if p.etag != m => {
                return Err(stale(name, m, Some(&p.etag)));
            }
            (None, Some(m)) => return Err(stale(name, m, None)),
            _ => {}
        }
        self.check_minimums_fit(name, &config)?;
        let router = hosted.dir.read_record().map_err(internal)?;
        let health = match &router {
            Some(r) => Some(deploy::health(r).await),
            None => None,
        };
        let serving = matches!(health, Some(RouterHealth::Serving(_)));
        if let Some(p) = &prior
            && p.etag == etag
            && serving
        {
            return Ok(Put::Unchanged(self.view(name, &hosted).await));
        }
        let min_ready = config.replicas.min;
        // A new address, or TLS turned on or off, needs a new listener: a restart.
        let same_listen = prior.as_ref().is_some_and(|p| {
            p.config.endpoint.listen == config.endpoint.listen
                && p.config.tls.is_some() == config.tls.is_some()
        });
        let outcome = match (&router, serving && same_listen) {
            (Some(r), true) => deploy::reload(&hosted.dir, r, config.clone(), min_ready, cancel)
                .await
                .map(|()| r.clone()),
            _ => {
                if router.as_ref().is_some_and(|r| r.process.alive())
                    && let Err(e) = deploy::stop(&hosted.dir, drain_of(prior.as_ref())).await
                {
                    return Err(failed(name, "could not stop its router", &e));
                }
                if prior.is_none() {
                    // Recorded before the router starts: a daemon that dies meanwhile leaves an
                    // endpoint the next one supervises, not a router nobody knows.
                    let pending = HostedRecord {
                        config: config.clone(),
                        etag: etag.clone(),
                        address: None,
                    };
                    if let Err(e) = store::write_json(&hosted.dir.0.join("hosted.json"), &pending) {
                        return Err(internal(format!(
                            "cannot record endpoint {name} in {}: {e}",
                            hosted.dir.0.display()
                        )));
                    }
                }
                let mut start = config.clone();
                // A router restarted for the same listen setting takes its old address again.
                if let Some(address) = prior.as_ref().and_then(|p| p.address.clone())
                    && same_listen
                {
                    start.endpoint.listen = address;
                }
                deploy::start(&self.site.fabric_bin, &hosted.dir, start, min_ready, cancel).await
            }
        };
        let router = match outcome {
            Ok(r) => r,
            Err(e) => {
                if prior.is_none() {
                    // A failed create leaves nothing: deploy::start stopped what it started.
                    let _ = hosted.dir.remove();
                    lock(&self.endpoints).remove(name);
                    if let Err(e) = self.ledger.forget(name) {
                        tracing::warn!(endpoint = %name, error = %e, "cannot remove the endpoint from the pool ledger");
                    }
                }
                return Err(failed(name, "its router did not apply the config", &e));
            }
        };
        let record = HostedRecord {
            config,
            etag,
            address: Some(router.address.clone()),
        };
        store::write_json(&hosted.dir.0.join("hosted.json"), &record).map_err(|e| {
            internal(format!(
                "cannot record endpoint {name} in {}: {e}",
                hosted.dir.0.display()
            ))
        })?;
        {
            let mut life = lock(&hosted.life);
            life.record = Some(record);
            life.failures = 0;
            life.retry_at = None;
            life.last_error = None;
        }
        let view = self.view(name, &hosted).await;
        Ok(if prior.is_some() {
            Put::Replaced(view)
        } else {
            Put::Created(view)
        })
    }

    /// Drains and stops endpoint `name` and forgets it; `false` when there is no such endpoint.
    pub async fn delete(&self, name: &str, if_match: Option<&str>) -> Result<bool, Problem> {
        if self.existing(name).is_none() {
            return Ok(false);
        }
        let (hosted, _busy) = self.lock_current(name).await;
        let prior = lock(&hosted.life).record.clone();
        let Some(prior) = prior else {
            lock(&self.endpoints).remove(name);
            return Ok(false);
        };
        if let Some(m) = if_match
            && m != prior.etag
        {
            return Err(stale(name, m, Some(&prior.etag)));
        }
        lock(&hosted.life).deleting = true;
        deploy::stop(&hosted.dir, drain_of(Some(&prior)))
            .await
            .map_err(|e| failed(name, "could not stop it", &e))?;
        hosted.dir.remove().map_err(|e| {
            internal(format!(
                "endpoint {name} stopped, but {} remains: {e}",
                hosted.dir.0.display()
            ))
        })?;
        if let Err(e) = self.ledger.forget(name) {
            tracing::warn!(endpoint = %name, error = %e, "cannot remove the endpoint from the pool ledger");
        }
        lock(&hosted.life).record = None;
        lock(&self.endpoints).remove(name);
        Ok(true)
    }

    /// The endpoint as clients see it, if it is hosted.
    pub async fn get(&self, name: &str) -> Option<EndpointView> {
        let hosted = self.existing(name)?;
        Some(self.view(name, &hosted).await)
    }

    async fn view(&self, name: &str, hosted: &Hosted) -> EndpointView {
        let (record, restarts, last_error, retrying) = {
            let life = lock(&hosted.life);
            (
                life.record.clone(),
                life.restarts,
                life.last_error.clone(),
                life.retry_at.is_some(),
            )
        };
        let router = hosted.dir.read_record().ok().flatten();
        let health = match &router {
            Some(r) => deploy::health(r).await,
            None => RouterHealth::Gone,
        };
        let (state, replicas_status, status) = match health {
            RouterHealth::Serving(s) => ("serving", s.summary(), Some(s)),
            RouterHealth::NotAnswering => ("starting", "router not answering".to_string(), None),
            RouterHealth::Gone if retrying => (
                "failed",
                "router not running (restart failed; retrying)".to_string(),
                None,
            ),
            RouterHealth::Gone => (
                "restarting",
                "router not running (restarting)".to_string(),
                None,
            ),
        };
        let address = router
            .as_ref()
            .map(|r| r.address.clone())
            .filter(|a| !a.is_empty())
            .or_else(|| record.as_ref().and_then(|r| r.address.clone()));
        let scheme = match record.as_ref().is_some_and(|r| r.config.tls.is_some()) {
            true => "https",
            false => "http",
        };
        EndpointView {
            name: name.to_string(),
            etag: record.map(|r| r.etag).unwrap_or_default(),
            url: address.map(|a| format!("{scheme}://{a}/v2/models/{name}")),
            state: state.to_string(),
            replicas_status,
            router: router.filter(|r| r.process.alive()).map(|r| RouterView {
                pid: r.process.pid,
                address: r.address,
                started_at: r.started_at,
            }),
            restarts,
            last_error,
            status,
        }
    }

    /// One pass of supervision: every hosted endpoint whose router is not running (the daemon
    /// just started, or the router died) is started again on its old address, adopting the
    /// replicas still running, each on a task of its own so that one slow start holds up no
    /// other; failures back off exponentially up to a minute.
    pub fn supervise(&self, cancel: &CancellationToken) {
        let all: Vec<(String, Arc<Hosted>)> = lock(&self.endpoints)
            .iter()
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        for (name, hosted) in all {
            let Ok(busy) = hosted.busy.clone().try_lock_owned() else {
                continue;
            };
            let (record, due) = {
                let life = lock(&hosted.life);
                (
                    life.record.clone().filter(|_| !life.deleting),
                    life.retry_at.is_none_or(|t| t <= Instant::now()),
                )
            };
            let Some(record) = record else { continue };
            let running = deploy::complete_record(&hosted.dir)
                .ok()
                .flatten()
                .is_some_and(|r| r.process.alive());
            if running || !due {
                continue;
            }
            let fabric_bin = self.site.fabric_bin.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                restart(&fabric_bin, &name, &hosted, record, &cancel).await;
                drop(busy);
            });
        }
    }

    /// Drains every endpoint at once (each router answers what it accepted, then drains and
    /// stops its replicas). Their records stay: the next daemon starts them again.
    pub async fn drain_all(&self) {
        let all: Vec<(String, Arc<Hosted>)> = lock(&self.endpoints)
            .iter()
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        let mut stops = tokio::task::JoinSet::new();
        for (name, hosted) in all {
            stops.spawn(async move {
                let _busy = hosted.busy.lock().await;
                let record = lock(&hosted.life).record.clone();
                if let Err(e) = deploy::stop(&hosted.dir, drain_of(record.as_ref())).await {
                    tracing::error!(endpoint = %name, error = %e, "could not drain the endpoint");
                }
            });
        }
        stops.join_all().await;
    }
}

/// Starts the router of a hosted endpoint again on its old address.
async fn restart(
    fabric_bin: &std::path::Path,
    name: &str,
    hosted: &Hosted,
    record: HostedRecord,
    cancel: &CancellationToken,
) {
    let mut config = record.config;
    if let Some(address) = &record.address {
        config.endpoint.listen = address.clone();
    }
    tracing::info!(endpoint = %name, "router not running; starting it");
    let min_ready = config.replicas.min;
    match deploy::start(fabric_bin, &hosted.dir, config, min_ready, cancel).await {
        Ok(router) => {
            tracing::info!(endpoint = %name, pid = router.process.pid, address = %router.address, "router started");
            let mut life = lock(&hosted.life);
            life.restarts += 1;
            life.failures = 0;
            life.retry_at = None;
            life.last_error = None;
        }
        Err(e) => {
            let mut life = lock(&hosted.life);
            life.failures += 1;
            let wait = Duration::from_secs(1u64 << life.failures.min(6)).min(MAX_BACKOFF);
            life.retry_at = Some(Instant::now() + wait);
            life.last_error = Some(e.to_string());
            tracing::error!(endpoint = %name, error = %e, retry_in = ?wait, "router did not start");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The drain timeout of an endpoint's policy, or 30 s.
fn drain_of(record: Option<&HostedRecord>) -> Duration {
    record
        .and_then(|r| r.config.policy.as_ref())
        .and_then(|p| humantime::parse_duration(&p.scale_down.drain_timeout).ok())
        .unwrap_or(Duration::from_secs(30))
}

fn stale(name: &str, asked: &str, current: Option<&str>) -> Problem {
    let now = match current {
        Some(e) => format!("its ETag is now {e:?}"),
        None => "it does not exist".to_string(),
    };
    Problem::new(
        412,
        "precondition-failed",
        "The endpoint changed",
        format!("If-Match {asked:?} does not hold for endpoint {name:?}: {now}; read it again before changing it"),
    )
    .at("If-Match")
}

pub(super) fn failed(name: &str, what: &str, e: &DeployError) -> Problem {
    let (status, slug) = match e.root() {
        DeployError::Refused(_) => (422, "refused"),
        DeployError::Cancelled => (503, "cancelled"),
        _ => (500, "deploy-failed"),
    };
    Problem::new(
        status,
        slug,
        "The endpoint was not deployed",
        format!("endpoint {name}: {what}: {e}"),
    )
}

pub(super) fn internal(e: impl std::fmt::Display) -> Problem {
    Problem::new(500, "internal", "The daemon failed", e.to_string())
}

/// The config's digest as the API reports it (its ETag).
pub fn etag_of(config: &FabricConfig) -> String {
    let text = serde_json::to_string(config).unwrap_or_default();
    crate::config::digest(&text)[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::api::parse_config;

    #[test]
    fn an_etag_survives_a_json_round_trip_of_an_extreme_float() {
        // Found by the admin_api_body fuzz target: without exact float parsing this value read
        // back one unit in the last place off what was written, and the ETag changed.
        let body = br#"{"endpoint": {"name": "assistant"}, "model": {"path": "m.safetensors"},
            "policy": {"name": "p", "scale_up": {"gpu_utilization": 88888888888888888888888888888888888888888888880.8}},
            "pools": [{"name": "lab", "role": "base", "region": "r", "jurisdiction": "EU",
                       "capacity_type": "on_prem", "price_per_gpu_hour": 0.1, "gpus_max": 2}],
            "runtime": {"path": "gpucap-runtime"}, "state": {"dir": "s"}}"#;
        let config = parse_config(body).unwrap();
        let again = parse_config(&serde_json::to_vec(&config).unwrap()).unwrap();
        assert_eq!(etag_of(&again), etag_of(&config));
    }
}
