//! The control loop: every second (and at once when a request is held) it checks each replica's
//! process, scrapes its `/metrics`, measures the signals, asks the [autoscaler]
//! what to do, and carries that out through the pools' drivers. It owns the replicas' lifecycle:
//! starting, adopting after a router restart, failing starts with back-off, replacing lost
//! replicas, draining, stopping, rolling restarts after a reload.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::autoscaler::{
    self, Action, Memory, Observation, Phase, PoolState, ReplicaState, Signals,
};
use crate::config::{DriverConfig, Fabric};
use crate::driver::ApiMetrics;
use crate::driver::aws::{AwsGroupDriver, GroupRef};
use crate::driver::local::{self, LocalDriver, Seat};
use crate::driver::slurm::SlurmDriver;
use crate::driver::{Driver, DriverError, ReplicaRecord, ReplicaSpec};
use crate::fleet::{Fleet, Member};
use crate::learned::{self, Learned};
use crate::ledger::{self, Ledger};
use crate::metrics::{DecisionLabels, FabricMetrics, ReplicaLabels};
use crate::record::Recorder;
use crate::signals::{self, LatencyWindow, ReplicaSample, Round, ServingLoad};
use crate::status::{
    BudgetStatus, DecisionRecord, PoolStatus, ReplicaStatus, RouterStatus, SignalStatus, Status,
};
use sha2::Digest as _;

/// How often the loop runs without being woken.
pub const TICK: Duration = Duration::from_secs(1);
/// Decisions kept for `/fabric/status`.
const DECISIONS_KEPT: usize = 50;
/// A replica that dies sooner than this after starting counts toward its pool's back-off (two in
/// a row are a crash loop); one that lived longer was lost, not broken, and is replaced at once.
pub const QUICK_DEATH: Duration = Duration::from_secs(10);
/// Longest back-off of a failing pool.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the data plane and the control plane share.
pub struct Shared {
    /// The replicas.
    pub fleet: Arc<Fleet>,
    /// Router metrics.
    pub metrics: FabricMetrics,
    /// The router's latency and rate window.
    pub window: LatencyWindow,
    /// The latest status, published by the loop.
    pub status: Mutex<Status>,
    /// Replicas on other machines that joined.
    pub join: Arc<crate::join::JoinHub>,
    /// Who may call: API keys, their limits and usage.
    pub gateway: Arc<crate::gateway::Gateway>,
    /// How many threads serve the public listener.
    pub serving_threads: usize,
}

/// A pool's driver and how it has been doing.
struct PoolSlot {
    driver: Option<Arc<dyn Driver>>,
    /// Why its driver could not be built (it is skipped for good).
    broken: Option<String>,
    failures: u32,
    quick_deaths: u32,
    backoff_until: Option<Instant>,
    last_error: Option<String>,
    /// How long its last start took.
    cold_start: Option<Duration>,
}

enum Done {
    Started {
        id: String,
        /// The pool's name: indexes may change with a reload while the start runs.
        pool: String,
        result: Result<ReplicaRecord, DriverError>,
    },
    Stopped {
        id: String,
        result: Result<(), DriverError>,
    },
}

/// The control loop's state.
pub struct Controller {
    shared: Arc<Shared>,
    fabric: Fabric,
    runtime_digest: String,
    pools: Vec<PoolSlot>,
    records: HashMap<String, ReplicaRecord>,
    /// Replicas being stopped: already out of the fleet's rotation.
    stopping: BTreeSet<String>,
    /// Starts in flight, by replica id.
    pending: HashMap<String, Pending>,
    /// Replicas asked to stop while still starting: their start is cancelled, and one that
    /// finishes anyway is stopped at once.
    stop_when_started: BTreeSet<String>,
    /// Consecutive failed scrapes of a ready replica.
    scrape_failures: HashMap<String, u32>,
    memory: Memory,
    samples: HashMap<String, ReplicaSample>,
    /// Pools (by name) of replicas lost since the last decision.
    lost: Vec<String>,
    decisions: VecDeque<DecisionRecord>,
    seq: u64,
    tasks: JoinSet<Done>,
    http: reqwest::Client,
    cancel: CancellationToken,
    epoch: Instant,
    last_tick: Instant,
    budget_bound: bool,
    blocked: Option<String>,
    reload_error: Option<String>,
    reloads: u64,
    address: String,
    scale_from_zero: Option<f64>,
    /// Where each round's observation and decision are written, when asked.
    recorder: Option<Recorder>,
    /// When what was learned was last kept.
    last_saved: Instant,
}

/// A start in flight.
struct Pending {
    /// The runtime digest it is started with.
    digest: String,
    /// Its own cancellation (a child of the controller's): a start no longer wanted gives back
    /// what it asked for instead of finishing.
    cancel: CancellationToken,
}

/// A file's SHA-256 (hex) and length, read a MiB at a time: a model may be many gigabytes.
fn file_sha256(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// How often what the router learned is written to its state directory.
const SAVE_EVERY: Duration = Duration::from_secs(60);

impl Controller {
    /// A controller for `fabric`, whose replicas are started with `runtime_digest`.
    pub fn new(
        shared: Arc<Shared>,
        fabric: Fabric,
        runtime_digest: String,
        address: String,
    ) -> Self {
        let now = Instant::now();
        let mut c = Controller {
            shared,
            pools: Vec::new(),
            runtime_digest,
            records: HashMap::new(),
            stopping: BTreeSet::new(),
            pending: HashMap::new(),
            stop_when_started: BTreeSet::new(),
            scrape_failures: HashMap::new(),
            memory: Memory::default(),
            samples: HashMap::new(),
            lost: Vec::new(),
            decisions: VecDeque::new(),
            seq: 0,
            tasks: JoinSet::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(800))
                .build()
                .unwrap_or_default(),
            cancel: CancellationToken::new(),
            epoch: now,
            last_tick: now,
            budget_bound: false,
            blocked: None,
            reload_error: None,
            reloads: 0,
            address,
            scale_from_zero: None,
            recorder: None,
            last_saved: now,
            fabric,
        };
        c.pools = c.build_pools(&[]);
        c.open_joins();
        c.restore_learned();
        c
    }

    /// Tells the join routes what to offer and which pools may be joined: those with a driver
    /// and join tokens. Every pool loaded is in the endpoint's placement and residency, so a
    /// claim to any other pool is refused.
    fn open_joins(&self) {
        let gates = self
            .fabric
            .pools
            .iter()
            .zip(&self.pools)
            .filter_map(|(p, slot)| {
                let driver = slot.driver.clone()?;
                let mut token_sha256 = p.join_token_sha256.clone();
                token_sha256.extend(driver.join_token_sha256());
                (!token_sha256.is_empty()).then(|| {
                    (
                        p.name.clone(),
                        crate::join::Gate {
                            token_sha256,
                            driver,
                        },
                    )
                })
            })
            .collect();
        self.shared.join.set_gates(gates);
        match file_sha256(&self.fabric.model_path) {
            Ok((sha256, bytes)) => self.shared.join.set_offer(crate::join::Offer {
                spec: gpucap_runtime::join::JoinSpec {
                    model_name: self.fabric.name.clone(),
                    model_version: self.fabric.model_version.clone(),
                    model_sha256: sha256,
                    model_bytes: bytes,
                    batching: self.fabric.batching,
                    max_body_bytes: self.fabric.max_body_bytes,
                },
                model_path: self.fabric.model_path.clone(),
            }),
            Err(e) => tracing::error!(
                path = %self.fabric.model_path.display(),
                error = %e,
                "cannot read the model to offer joining replicas"
            ),
        }
    }

    /// Takes back what an earlier router of this endpoint learned, when it left a usable file.
    fn restore_learned(&mut self) {
        match learned::load(&self.fabric.state_dir, &self.fabric.name) {
            Ok(Some(l)) => {
                for (slot, pool) in self.pools.iter_mut().zip(&self.fabric.pools) {
                    if let Some(&s) = l.cold_starts.get(&pool.name) {
                        slot.cold_start = Some(Duration::from_secs_f64(s));
                    }
                }
                self.memory.restore(l.shape, l.curve);
                tracing::info!(
                    "restored the load shape, service curve and cold starts learned earlier"
                );
            }
            Ok(None) => {}
            Err(why) => tracing::warn!("not using what an earlier router learned: {why}"),
        }
    }

    /// Keeps what the router learned, for the next one.
    fn save_learned(&mut self) {
        self.last_saved = Instant::now();
        let (shape, curve) = self.memory.learned();
        let cold_starts = self
            .fabric
            .pools
            .iter()
            .zip(&self.pools)
            .filter_map(|(p, s)| Some((p.name.clone(), s.cold_start?.as_secs_f64())))
            .collect();
        let l = Learned::new(&self.fabric.name, shape.clone(), curve.clone(), cold_starts);
        if let Err(e) = learned::save(&self.fabric.state_dir, &l) {
            tracing::warn!(error = %e, "could not keep what the router learned");
        }
    }

    /// Writes every round's observation and decision to `recorder`.
    pub fn record_to(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    fn replicas_dir(&self) -> PathBuf {
        self.fabric.state_dir.join("replicas")
    }

    /// Drivers for the configured pools, keeping the health of pools that stay.
    fn build_pools(&self, old: &[(String, PoolSlot)]) -> Vec<PoolSlot> {
        let dir = self.replicas_dir();
        let ledger = Ledger::new(&self.fabric.ledger_dir);
        let reserved = ledger::reservations(&self.fabric.pools, self.fabric.scaling.replicas_min);
        let names: Vec<&str> = self.fabric.pools.iter().map(|p| p.name.as_str()).collect();
        if let Err(e) = ledger.keep_reservations(&self.fabric.name, &names) {
            tracing::warn!(error = %e, "cannot drop the reservations of pools no longer configured");
        }
        self.fabric
            .pools
            .iter()
            .zip(reserved)
            .map(|(p, reserved)| {
                let seat = Seat {
                    ledger: ledger.clone(),
                    endpoint: self.fabric.name.clone(),
                    reserved,
                };
                let (driver, broken) = match &p.driver {
                    Some(DriverConfig::Local {
                        devices,
                        runtime_path,
                    }) => {
                        match LocalDriver::new(&p.name, devices, p.slots, runtime_path, &dir, seat)
                        {
                            Ok(d) => (Some(Arc::new(d) as Arc<dyn Driver>), None),
                            Err(e) => (None, Some(e.0)),
                        }
                    }
                    Some(DriverConfig::AwsAutoscalingGroup {
                        group,
                        profile,
                        endpoint_url,
                        join_timeout,
                    }) => {
                        let group = GroupRef {
                            name: group.clone(),
                            region: p.region.clone(),
                            profile: profile.clone(),
                            endpoint_url: endpoint_url.clone(),
                        };
                        let driver = AwsGroupDriver::new(
                            &p.name,
                            group,
                            p.slots,
                            *join_timeout,
                            self.shared.join.clone(),
                            ApiMetrics {
                                calls: self.shared.metrics.driver_api_calls.clone(),
                                errors: self.shared.metrics.driver_api_errors.clone(),
                            },
                        );
                        (Some(Arc::new(driver) as Arc<dyn Driver>), None)
                    }
                    Some(DriverConfig::Slurm(config)) => match SlurmDriver::new(
                        &self.fabric.name,
                        &p.name,
                        (**config).clone(),
                        p.slots,
                        self.shared.join.clone(),
                        ApiMetrics {
                            calls: self.shared.metrics.driver_api_calls.clone(),
                            errors: self.shared.metrics.driver_api_errors.clone(),
                        },
                    ) {
                        Ok(d) => (Some(Arc::new(d) as Arc<dyn Driver>), None),
                        Err(e) => (None, Some(e.0)),
                    },
                    None => (None, Some("the pool has no driver".to_string())),
                };
                let kept = old.iter().find(|(name, _)| name == &p.name);
                PoolSlot {
                    driver,
                    broken: broken.clone(),
                    failures: kept.map_or(0, |(_, s)| s.failures),
                    quick_deaths: kept.map_or(0, |(_, s)| s.quick_deaths),
                    backoff_until: kept.and_then(|(_, s)| s.backoff_until),
                    last_error: broken.or_else(|| kept.and_then(|(_, s)| s.last_error.clone())),
                    cold_start: kept.and_then(|(_, s)| s.cold_start),
                }
            })
            .collect()
    }

    fn log(&mut self, action: &str, subject: &str, reason: &str) {
        tracing::info!(action, subject, reason, "decision");
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        self.decisions.push_back(DecisionRecord {
            at,
            action: action.into(),
            subject: subject.into(),
            reason: reason.into(),
        });
        while self.decisions.len() > DECISIONS_KEPT {
            self.decisions.pop_front();
        }
    }

    /// Adopts the live replicas recorded in `state_dir` (a restarted router starts no
    /// duplicates) and stops recorded replicas of pools no longer configured.
    pub async fn adopt(&mut self) {
        let dir = self.replicas_dir();
        // Ids continue after every one used before, recorded or not.
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Some(n) = entry
                .file_name()
                .to_string_lossy()
                .rsplit('-')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
            {
                self.seq = self.seq.max(n);
            }
        }
        for record in local::records(&dir) {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable replica record");
                    continue;
                }
            };
            let alive = record.process.as_ref().is_some_and(|p| p.alive());
            let pool = self.fabric.pools.iter().position(|p| p.name == record.pool);
            match (alive, pool) {
                (false, _) => {
                    let _ = local::stop_record(&dir, &record, Duration::ZERO).await;
                }
                (true, _) if record.address.is_empty() => {
                    self.log(
                        "stop",
                        &record.id,
                        "its start was interrupted (the router stopped before it was ready)",
                    );
                    let _ = local::stop_record(&dir, &record, Duration::ZERO).await;
                }
                (true, None) => {
                    self.log(
                        "stop",
                        &record.id,
                        &format!("its pool {} is no longer configured", record.pool),
                    );
                    if let Err(e) =
                        local::stop_record(&dir, &record, self.fabric.scaling.drain_timeout).await
                    {
                        tracing::warn!(error = %e, "cannot stop an unconfigured replica");
                    }
                }
                (true, Some(i)) => {
                    let pool = &self.fabric.pools[i];
                    let mut m =
                        Member::starting(record.id.clone(), i, pool.name.clone(), pool.burst);
                    m.outdated = record.digest != self.runtime_digest;
                    self.shared.fleet.add(m);
                    let ready = self
                        .http
                        .get(format!("http://{}/v2/health/ready", record.address))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    self.shared.fleet.ready(&record.id, &record.address);
                    if !ready {
                        self.shared.fleet.fail(&record.id);
                    }
                    let id = record.id.clone();
                    self.records.insert(id.clone(), record);
                    self.log("adopt", &id, "running replica recorded in state_dir");
                }
            }
        }
    }

    /// Runs until `stop` is cancelled, then stops every replica. `reload` delivers new configs.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        mut reload: tokio::sync::mpsc::Receiver<Result<(Fabric, String), String>>,
    ) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        loop {
            // Decisions are timed by the tick's schedule, not by when its scrapes finished, so a
            // signal high at one tick has held exactly `for` at the tick `for` later.
            let at = tokio::select! {
                t = interval.tick() => t.into_std(),
                _ = shared.fleet.wake.notified() => Instant::now(),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(done) = done {
                        self.finished(done);
                    }
                    Instant::now()
                }
                Some(next) = reload.recv() => {
                    self.reload(next);
                    Instant::now()
                }
                _ = stop.cancelled() => break,
            };
            self.tick(at).await;
        }
        self.shutdown().await;
    }

    /// Applies a reloaded config (or records why it was refused).
    fn reload(&mut self, next: Result<(Fabric, String), String>) {
        self.reloads += 1;
        let (fabric, runtime_digest) = match next {
            Ok(f) => f,
            Err(e) => {
                self.log(
                    "reload",
                    "config",
                    &format!("refused, keeping the running config: {e}"),
                );
                self.reload_error = Some(e);
                return;
            }
        };
        self.reload_error = None;
        let old: Vec<(String, PoolSlot)> = self
            .fabric
            .pools
            .iter()
            .map(|p| p.name.clone())
            .zip(std::mem::take(&mut self.pools))
            .collect();
        self.fabric = fabric;
        self.pools = self.build_pools(&old);
        self.open_joins();
        self.memory.forget_pools();
        let pools = self.fabric.pools.clone();
        self.shared.fleet.reindex(|name| {
            pools
                .iter()
                .position(|p| p.name == name)
                .map(|i| (i, pools[i].burst))
        });
        self.shared.fleet.configure(
            self.fabric.replica_concurrency,
            self.fabric.hold_capacity,
            self.fabric
                .scaling
                .budget
                .is_some_and(|b| b.reject_when_exhausted),
        );
        let digest = self
            .fabric
            .config_digest
            .chars()
            .take(12)
            .collect::<String>();
        self.log("reload", "config", &format!("applied config {digest}"));
        self.set_runtime_digest(runtime_digest);
    }

    /// Sets the digest replicas must have; replicas with another are rolled.
    fn set_runtime_digest(&mut self, digest: String) {
        if digest == self.runtime_digest {
            return;
        }
        self.runtime_digest = digest;
        let outdated: Vec<String> = self
            .records
            .values()
            .map(|r| (&r.id, &r.digest))
            .chain(self.pending.iter().map(|(id, p)| (id, &p.digest)))
            .filter(|(_, digest)| **digest != self.runtime_digest)
            .map(|(id, _)| id.clone())
            .collect();
        if !outdated.is_empty() {
            self.log(
                "roll",
                &format!("{} replica(s)", outdated.len()),
                "the replicas' configuration changed: rolling restart",
            );
        }
        self.shared.fleet.mark_outdated(&outdated);
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Started { id, pool, result } => {
                self.pending.remove(&id);
                let index = self.fabric.pools.iter().position(|p| p.name == pool);
                match result {
                    Ok(record) => self.started(id, index, record),
                    // Asked to stop while starting: what the start asked for was given back.
                    // Not the pool's failure, so no backoff.
                    Err(e) if self.stop_when_started.remove(&id) => {
                        self.shared.fleet.remove(&id);
                        self.log("cancelled", &id, &e.0);
                    }
                    Err(e) => {
                        self.shared.fleet.remove(&id);
                        if let Some(i) = index {
                            self.pool_failed(i, &e.0);
                        }
                        self.log("failed", &id, &e.0);
                    }
                }
            }
            Done::Stopped { id, result } => {
                self.stopping.remove(&id);
                match result {
                    Ok(()) => {
                        self.shared.fleet.remove(&id);
                        self.records.remove(&id);
                        self.samples.remove(&id);
                        self.scrape_failures.remove(&id);
                    }
                    // It stays recorded and draining; the next decision asks to stop it again.
                    Err(e) => self.log("stop", &id, &format!("failed, will retry: {e}")),
                }
            }
        }
    }

    /// A start that succeeded: into rotation, unless it was asked to stop meanwhile or its pool
    /// was dropped by a reload.
    fn started(&mut self, id: String, pool: Option<usize>, record: ReplicaRecord) {
        let address = record.address.clone();
        let outdated = record.digest != self.runtime_digest;
        self.records.insert(id.clone(), record);
        let Some(pool) = pool.filter(|_| !self.stop_when_started.remove(&id)) else {
            self.shared.fleet.set_phase(&id, Phase::Draining);
            self.begin_stop(&id, "drained while it was starting");
            return;
        };
        if outdated {
            self.shared.fleet.mark_outdated(std::slice::from_ref(&id));
        }
        let took = self
            .shared
            .fleet
            .members()
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.phase_since.elapsed());
        self.shared.fleet.ready(&id, &address);
        let slot = &mut self.pools[pool];
        slot.cold_start = took.or(slot.cold_start);
        slot.failures = 0;
        slot.backoff_until = None;
        slot.last_error = None;
        let reason = match self.shared.fleet.take_zero_since() {
            Some(t) => {
                let s = t.elapsed().as_secs_f64();
                self.shared.metrics.scale_from_zero_seconds.observe(s);
                self.scale_from_zero = Some(s);
                format!("serving at {address}, {s:.3} s after the first held request")
            }
            None => format!("serving at {address}"),
        };
        self.log("ready", &id, &reason);
    }

    /// Stops a recorded replica through its driver, in the background.
    fn begin_stop(&mut self, id: &str, reason: &str) {
        let Some(record) = self.records.get(id).cloned() else {
            return;
        };
        if !self.stopping.insert(id.to_string()) {
            return;
        }
        let stop = self.stop_future(record);
        let owned = id.to_string();
        self.tasks.spawn(async move {
            let result = stop.await;
            Done::Stopped { id: owned, result }
        });
        self.log("stop", id, reason);
    }

    /// A failed start (or a replica that keeps dying): back off that pool; meanwhile the
    /// autoscaler places what it still wants elsewhere.
    fn pool_failed(&mut self, pool: usize, error: &str) {
        let slot = &mut self.pools[pool];
        let now = Instant::now();
        // Starts that were already in flight when the pool began backing off fail of the same
        // cause (one outage fails every start at once): they do not lengthen the backoff.
        if slot.backoff_until.is_none_or(|t| t <= now) {
            slot.failures += 1;
            let backoff = Duration::from_secs(1 << (slot.failures - 1).min(6)).min(MAX_BACKOFF);
            slot.backoff_until = Some(now + backoff);
        }
        slot.last_error = Some(error.to_string());
        FabricMetrics::named(
            &self.shared.metrics.replica_failures,
            &self.fabric.pools[pool].name,
        )
        .inc();
    }

    /// Whether a recorded replica still runs, as its pool's driver sees it (a pool no longer
    /// configured: whether its process runs).
    fn alive(&self, record: &ReplicaRecord) -> bool {
        match self
            .fabric
            .pools
            .iter()
            .position(|p| p.name == record.pool)
            .and_then(|i| self.pools[i].driver.as_ref())
        {
            Some(driver) => driver.alive(record),
            None => record.process.as_ref().is_some_and(|p| p.alive()),
        }
    }

    /// Replicas whose process is gone: out of the fleet, to be replaced.
    fn reap(&mut self) {
        let gone: Vec<ReplicaRecord> = self
            .records
            .values()
            .filter(|r| !self.stopping.contains(&r.id))
            .filter(|r| !self.alive(r))
            .cloned()
            .collect();
        let draining: BTreeSet<String> = self
            .shared
            .fleet
            .members()
            .into_iter()
            .filter(|m| m.phase == Phase::Draining)
            .map(|m| m.id)
            .collect();
        for r in gone {
            self.records.remove(&r.id);
            self.samples.remove(&r.id);
            self.scrape_failures.remove(&r.id);
            self.shared.fleet.remove(&r.id);
            let _ = std::fs::remove_dir_all(self.replicas_dir().join(&r.id));
            if draining.contains(&r.id) {
                // It was on its way out: nothing to replace.
                self.log("stop", &r.id, "exited while draining");
                continue;
            }
            let Some(pool) = self.fabric.pools.iter().position(|p| p.name == r.pool) else {
                continue;
            };
            let lived = humantime::parse_rfc3339(&r.started_at)
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or(Duration::MAX);
            let spot = self.fabric.pools[pool].capacity_type == crate::config::CapacityType::Spot;
            let what = if spot {
                "reclaimed or exited"
            } else {
                "exited"
            };
            let subject = match &r.process {
                Some(p) => format!("process {}", p.pid),
                None => format!("the connection of {}", r.device),
            };
            self.log("lost", &r.id, &format!("{subject} {what}; replacing it"));
            if r.process.is_none() {
                // A joined replica's machine may still run: give it back rather than pay for it.
                let stop = self.stop_future(r.clone());
                tokio::spawn(async move {
                    if let Err(e) = stop.await {
                        tracing::warn!(error = %e, "cannot give back a lost replica's machine");
                    }
                });
            }
            self.lost.push(r.pool.clone());
            if lived < QUICK_DEATH {
                self.pools[pool].quick_deaths += 1;
                if self.pools[pool].quick_deaths >= 2 {
                    // A crash loop: back the pool off like a failed start.
                    self.pool_failed(
                        pool,
                        &format!("replica {} keeps exiting soon after it starts", r.id),
                    );
                    continue;
                }
            } else {
                self.pools[pool].quick_deaths = 0;
            }
            FabricMetrics::named(&self.shared.metrics.replica_failures, &r.pool).inc();
        }
    }

    /// Scrapes every serving or unhealthy replica's metrics (and health when unhealthy).
    async fn scrape(&mut self) {
        let members = self.shared.fleet.members();
        let mut probes = JoinSet::new();
        for m in members
            .iter()
            .filter(|m| matches!(m.phase, Phase::Ready | Phase::Unhealthy))
        {
            let (Some(address), http) = (m.address.clone(), self.http.clone()) else {
                continue;
            };
            let (id, phase) = (m.id.clone(), m.phase);
            probes.spawn(async move {
                let metrics = async {
                    let r = http
                        .get(format!("http://{address}/metrics"))
                        .send()
                        .await
                        .ok()?;
                    let text = r.error_for_status().ok()?.text().await.ok()?;
                    let sample = ReplicaSample::parse(&text, Instant::now())?;
                    Some((sample, signals::backend_label(&text)))
                }
                .await;
                let healthy = if phase == Phase::Unhealthy {
                    http.get(format!("http://{address}/v2/health/ready"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                } else {
                    metrics.is_some()
                };
                (id, metrics, healthy)
            });
        }
        while let Some(Ok((id, sample, healthy))) = probes.join_next().await {
            if let Some((sample, backend)) = sample {
                let (busy, batches) = self
                    .samples
                    .get(&id)
                    .map_or((0.0, Default::default()), |earlier| {
                        (sample.busy_since(earlier), sample.batches_since(earlier))
                    });
                self.shared
                    .fleet
                    .observe(&id, sample.queue_depth, busy, batches, backend);
                self.samples.insert(id.clone(), sample);
            }
            if healthy {
                self.scrape_failures.remove(&id);
                self.shared.fleet.set_phase(&id, Phase::Ready);
                continue;
            }
            // One slow scrape on a busy host is not a sick replica; two in a row are.
            let misses = self.scrape_failures.entry(id.clone()).or_insert(0);
            *misses += 1;
            if *misses >= 2 && self.shared.fleet.fail(&id) {
                self.log(
                    "unhealthy",
                    &id,
                    "its metrics or health check did not answer twice; out of rotation",
                );
            }
        }
    }

    fn signals(&self, members: &[Member], seconds: f64) -> Signals {
        let serving: Vec<ServingLoad> = members
            .iter()
            .filter(|m| m.phase == Phase::Ready)
            .map(|m| ServingLoad {
                busy: m.busy,
                batches: m.batches,
            })
            .collect();
        let fleet = &self.shared.fleet;
        let (in_flight, arrivals, refused) = fleet.take_round();
        let round = Round {
            in_flight,
            arrivals,
            held_mean: fleet.held_mean(),
            held: fleet.held(),
            refused,
            seconds,
        };
        signals::measure(&serving, round, self.shared.window.summary(Instant::now()))
    }

    fn burst_rate(&self, members: &[Member]) -> f64 {
        self.hourly_rate(members, true)
    }

    /// What the replicas in `members` cost per hour: those on burst pools only, or all.
    fn hourly_rate(&self, members: &[Member], burst_only: bool) -> f64 {
        members
            .iter()
            .filter_map(|m| m.pool)
            .filter(|&p| !burst_only || self.fabric.pools[p].burst)
            .map(|p| self.fabric.pools[p].price_per_gpu_hour.unwrap_or(0.0))
            // Folded from +0.0: an empty float sum is -0.0, which prints as "-0.00".
            .fold(0.0, |a, b| a + b)
    }

    /// Machines that joined a pool with no start asking for them (they outlived a restarted
    /// router, or their group grew by hand) become replicas rather than sit idle and paid for;
    /// the autoscaler then keeps or drains them like any other. Not while a start of that pool
    /// is in flight: the machine may be the one it asked for.
    fn adopt_joined(&mut self) {
        let members = self.shared.fleet.members();
        for i in 0..self.fabric.pools.len() {
            let Some(driver) = self.pools[i].driver.clone() else {
                continue;
            };
            let on_pool: Vec<&Member> = members.iter().filter(|m| m.pool == Some(i)).collect();
            if on_pool.iter().any(|m| m.phase == Phase::Starting) {
                continue;
            }
            let name = self.fabric.pools[i].name.clone();
            let mut occupied = on_pool.len();
            while occupied < driver.capacity().slots
                && !self.shared.join.unclaimed(&name).is_empty()
            {
                let id = format!("{name}-{}", self.seq + 1);
                let Some((machine, address)) = self.shared.join.claim(&name, &id) else {
                    break;
                };
                self.seq += 1;
                occupied += 1;
                let p = &self.fabric.pools[i];
                self.shared
                    .fleet
                    .add(Member::starting(id.clone(), i, name.clone(), p.burst));
                let spec = self.spec(&id);
                self.pending.insert(
                    id.clone(),
                    Pending {
                        digest: spec.digest.clone(),
                        cancel: self.cancel.child_token(),
                    },
                );
                self.log(
                    "adopt",
                    &id,
                    &format!("{machine} joined pool {name} with no start asking for it"),
                );
                let (driver, pool) = (driver.clone(), name.clone());
                self.tasks.spawn(async move {
                    let result = driver.adopt_joined(&spec, machine, address).await;
                    Done::Started { id, pool, result }
                });
            }
        }
    }

    /// Marks the replicas whose capacity ends soon (their driver says when) for replacement.
    fn mark_expiring(&mut self) {
        let now = std::time::SystemTime::now();
        let due: Vec<String> = self
            .records
            .iter()
            .filter(|(_, record)| {
                self.fabric
                    .pools
                    .iter()
                    .position(|p| p.name == record.pool)
                    .and_then(|i| self.pools[i].driver.as_ref())
                    .and_then(|d| d.replace_at(record))
                    .is_some_and(|at| at <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in self.shared.fleet.mark_expiring(&due) {
            self.log(
                "expiring",
                &id,
                "its capacity ends soon (its job's time limit): a successor replaces it",
            );
        }
    }

    /// One round at `at`: reap, adopt joined machines, scrape, measure, decide, act, publish.
    async fn tick(&mut self, at: Instant) {
        self.reap();
        self.adopt_joined();
        self.mark_expiring();
        self.scrape().await;
        let now = Instant::now();
        let members = self.shared.fleet.members();
        let rate = self.burst_rate(&members);
        // Metered into the counter; status reads it back.
        self.shared
            .metrics
            .burst_spend_usd
            .inc_by(rate * now.duration_since(self.last_tick).as_secs_f64() / 3600.0);
        self.shared.metrics.burst_rate_usd_per_hour.set(rate);
        let seconds = now.duration_since(self.last_tick).as_secs_f64();
        // Every replica's cost, shared among the API keys by the rows each sent this round.
        let spent = self.hourly_rate(&members, false) * seconds / 3600.0;
        self.shared.metrics.replica_spend_usd.inc_by(spent);
        let unattributed = self.shared.gateway.attribute(spent);
        self.shared
            .metrics
            .unattributed_spend_usd
            .inc_by(unattributed);
        self.last_tick = now;

        let signals = self.signals(&members, seconds);
        let pools: Vec<PoolState> = self
            .fabric
            .pools
            .iter()
            .zip(&self.pools)
            .map(|(p, s)| PoolState {
                name: p.name.clone(),
                capacity_type: p.capacity_type,
                burst: p.burst,
                // What the host's ledger leaves this endpoint of the pool.
                slots: s.driver.as_ref().map_or(p.slots, |d| d.capacity().slots),
                price_per_hour: p.price_per_gpu_hour,
                usable: s.driver.is_some() && s.backoff_until.is_none_or(|t| t <= now),
                cold_start: s
                    .cold_start
                    .unwrap_or_else(|| p.capacity_type.typical_cold_start()),
            })
            .collect();
        let replicas: Vec<ReplicaState> = members
            .iter()
            .map(|m| ReplicaState {
                id: m.id.clone(),
                pool: m.pool,
                phase: m.phase,
                outstanding: m.outstanding,
                idle_for: if m.outstanding > 0 {
                    Duration::ZERO
                } else {
                    now.saturating_duration_since(m.idle_since)
                },
                phase_for: now.saturating_duration_since(m.phase_since),
                outdated: m.outdated,
                expiring: m.expiring,
            })
            .collect();
        let lost: Vec<usize> = std::mem::take(&mut self.lost)
            .iter()
            .filter_map(|name| self.fabric.pools.iter().position(|p| &p.name == name))
            .collect();
        let observation = Observation {
            now: at.saturating_duration_since(self.epoch),
            wall: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
            pools: &pools,
            replicas: &replicas,
            signals,
            lost: &lost,
        };
        let decision = autoscaler::decide(&mut self.memory, &observation, &self.fabric.scaling);
        if let Some(recorder) = &mut self.recorder
            && let Err(e) = recorder.write(&observation, &decision)
        {
            tracing::error!(error = %e, "stopped recording decisions");
            self.recorder = None;
        }
        for signal in &decision.raised {
            self.log("signal", "autoscaler", signal);
        }
        if decision.blocked != self.blocked {
            if let Some(b) = &decision.blocked {
                self.log("blocked", "autoscaler", b);
            }
            self.blocked = decision.blocked.clone();
        }
        self.budget_bound = decision.budget_bound;
        self.shared.fleet.set_budget_bound(decision.budget_bound);
        self.shared.fleet.set_spill(decision.spill);
        if self.last_saved.elapsed() >= SAVE_EVERY {
            self.save_learned();
        }
        for action in &decision.actions {
            self.act(action);
        }
        self.publish(signals, decision.target);
    }

    fn act(&mut self, action: &Action) {
        let (kind, reason_kind) = action.kind();
        match action {
            Action::Start { pool, reason } => {
                let Some(driver) = self.pools[*pool].driver.clone() else {
                    return;
                };
                self.seq += 1;
                let p = &self.fabric.pools[*pool];
                let id = format!("{}-{}", p.name, self.seq);
                let pool_name = p.name.clone();
                self.shared
                    .fleet
                    .add(Member::starting(id.clone(), *pool, p.name.clone(), p.burst));
                let spec = self.spec(&id);
                let cancel = self.cancel.child_token();
                self.pending.insert(
                    id.clone(),
                    Pending {
                        digest: spec.digest.clone(),
                        cancel: cancel.clone(),
                    },
                );
                self.log("start", &id, reason);
                self.tasks.spawn(async move {
                    let result = driver.start(&spec, &cancel).await;
                    Done::Started {
                        id,
                        pool: pool_name,
                        result,
                    }
                });
            }
            Action::Drain { replica, reason } => {
                self.shared.fleet.set_phase(replica, Phase::Draining);
                self.log("drain", replica, reason);
            }
            Action::Stop { replica, reason } => {
                if self.stopping.contains(replica) || self.stop_when_started.contains(replica) {
                    return;
                }
                if self.records.contains_key(replica) {
                    self.begin_stop(replica, reason);
                } else if let Some(pending) = self.pending.get(replica) {
                    // Out of the planner's count at once; its start gives back what it asked
                    // for (an instance terminated, a process killed).
                    pending.cancel.cancel();
                    self.stop_when_started.insert(replica.clone());
                    self.shared.fleet.set_phase(replica, Phase::Draining);
                    self.log(
                        "stop",
                        replica,
                        &format!("{reason}; its start is cancelled"),
                    );
                } else {
                    self.shared.fleet.remove(replica);
                }
            }
        }
        self.shared
            .metrics
            .decisions
            .get_or_create(&DecisionLabels {
                action: kind.into(),
                reason: reason_kind.into(),
            })
            .inc();
    }

    /// Stops a replica through its pool's driver (or, for a pool no longer configured, by its
    /// record): it finishes what it accepted within the drain timeout.
    fn stop_future(
        &self,
        record: ReplicaRecord,
    ) -> impl std::future::Future<Output = Result<(), DriverError>> + Send + 'static {
        let driver = self
            .fabric
            .pools
            .iter()
            .position(|p| p.name == record.pool)
            .and_then(|i| self.pools[i].driver.clone());
        let dir = self.replicas_dir();
        let grace = self.fabric.scaling.drain_timeout;
        async move {
            match driver {
                Some(d) => d.stop(&record, grace).await,
                None => local::stop_record(&dir, &record, grace).await,
            }
        }
    }

    fn spec(&self, id: &str) -> ReplicaSpec {
        ReplicaSpec {
            id: id.to_string(),
            model_path: self.fabric.model_path.clone(),
            model_name: self.fabric.name.clone(),
            model_version: self.fabric.model_version.clone(),
            batching: self.fabric.batching,
            max_body_bytes: self.fabric.max_body_bytes,
            digest: self.runtime_digest.clone(),
        }
    }

    /// Publishes status and the replica gauges.
    fn publish(&mut self, signals: Signals, target: usize) {
        let members = self.shared.fleet.members();
        let now = Instant::now();
        let metrics = &self.shared.metrics;
        metrics.held.set(signals.held as i64);
        for (name, v) in [
            ("queue_depth", signals.queue_per_replica()),
            ("p99_latency_ms", signals.p99_latency_ms),
            ("gpu_utilization", signals.utilization()),
            ("request_rate", Some(signals.request_rate)),
            ("held", Some(signals.held as f64)),
        ] {
            FabricMetrics::named(&metrics.signals, name).set(v.unwrap_or(0.0));
        }
        let phases = [
            (Phase::Starting, "starting"),
            (Phase::Ready, "ready"),
            (Phase::Unhealthy, "unhealthy"),
            (Phase::Draining, "draining"),
        ];
        for p in &self.fabric.pools {
            for (phase, label) in phases {
                let n = members
                    .iter()
                    .filter(|m| m.pool_name == p.name && m.phase == phase)
                    .count();
                metrics
                    .replicas
                    .get_or_create(&ReplicaLabels {
                        pool: p.name.clone(),
                        state: label.into(),
                    })
                    .set(n as i64);
            }
        }
        let pools = self
            .fabric
            .pools
            .iter()
            .zip(&self.pools)
            .map(|(p, s)| {
                let on = |m: &&Member| m.pool_name == p.name;
                let state = if s.broken.is_some() {
                    "failed"
                } else if s.backoff_until.is_some_and(|t| t > now) {
                    "backoff"
                } else {
                    "ok"
                };
                PoolStatus {
                    name: p.name.clone(),
                    role: if p.burst { "burst" } else { "base" }.into(),
                    capacity_type: p.capacity_type.as_str().into(),
                    region: p.region.clone(),
                    price_per_gpu_hour: p.price_per_gpu_hour,
                    slots: p.slots,
                    replicas: members.iter().filter(on).count(),
                    ready: members
                        .iter()
                        .filter(on)
                        .filter(|m| m.phase == Phase::Ready)
                        .count(),
                    state: state.into(),
                    error: s.last_error.clone(),
                }
            })
            .collect();
        let replicas = members
            .iter()
            .map(|m| ReplicaStatus {
                id: m.id.clone(),
                pool: m.pool_name.clone(),
                phase: serde_json::to_value(m.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                address: m.address.clone(),
                pid: self
                    .records
                    .get(&m.id)
                    .and_then(|r| r.process.as_ref().map(|p| p.pid)),
                outstanding: m.outstanding,
                queue_depth: m.queue_depth,
                busy: m.busy,
                served: m.served,
                phase_s: now.saturating_duration_since(m.phase_since).as_secs_f64(),
                outdated: m.outdated,
                expiring: m.expiring,
                backend: m.backend.clone(),
            })
            .collect();
        let scaling = &self.fabric.scaling;
        let status = Status {
            endpoint: self.fabric.name.clone(),
            policy: self.fabric.policy_name.clone(),
            router: RouterStatus {
                address: self.address.clone(),
                region: self.fabric.router_region.clone(),
                pid: std::process::id(),
                config_digest: self.fabric.config_digest.clone(),
                reloads: self.reloads,
                reload_error: self.reload_error.clone(),
                rollout_pending: members.iter().filter(|m| m.outdated).count(),
                held: signals.held,
                draining: self.cancel.is_cancelled(),
                auth: if self.fabric.auth_required {
                    "api_key"
                } else {
                    "none"
                }
                .into(),
                tls: self.fabric.tls.is_some(),
                threads: self.shared.serving_threads,
            },
            pools,
            replicas,
            signals: SignalStatus {
                queue_depth: signals.queue_per_replica(),
                queue_depth_threshold: scaling.queue_depth,
                p99_latency_ms: signals.p99_latency_ms,
                p99_latency_ms_threshold: scaling.p99_latency_ms,
                gpu_utilization: signals.utilization(),
                gpu_utilization_threshold: scaling.utilization,
                request_rate: signals.request_rate,
                held: signals.held,
            },
            budget: BudgetStatus {
                max_hourly_usd: scaling.budget.map(|b| b.max_hourly_usd),
                on_exhausted: scaling.budget.map(|b| {
                    if b.reject_when_exhausted {
                        "reject"
                    } else {
                        "queue"
                    }
                    .to_string()
                }),
                burst_rate_usd_per_hour: self.burst_rate(&members),
                burst_spend_usd: self.shared.metrics.burst_spend_usd.get(),
                replica_spend_usd: self.shared.metrics.replica_spend_usd.get(),
                bound: self.budget_bound,
            },
            target,
            replicas_min: scaling.replicas_min,
            replicas_max: scaling.replicas_max,
            blocked: self.blocked.clone(),
            decisions: self.decisions.iter().cloned().collect(),
            last_scale_from_zero_s: self.scale_from_zero,
            keys: self.shared.gateway.usage(),
        };
        *self.shared.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// Stops everything: starts in flight are cancelled, every replica drains and stops.
    async fn shutdown(mut self) {
        self.save_learned();
        self.cancel.cancel();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(done) = done {
                self.finished(done);
            }
        }
        let mut stops = JoinSet::new();
        for record in self.records.values().cloned() {
            let id = record.id.clone();
            let stop = self.stop_future(record);
            stops.spawn(async move { (id, stop.await) });
        }
        while let Some(Ok((id, result))) = stops.join_next().await {
            match result {
                Ok(()) => tracing::info!(replica = %id, "stopped"),
                Err(e) => tracing::warn!(replica = %id, error = %e, "could not stop"),
            }
        }
        self.publish(Signals::default(), 0);
    }
}
