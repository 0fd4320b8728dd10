//! Deploying an endpoint's router on this host, for the provider (which never talks to a process
//! itself): start it detached and record it, reload it in place, ask how it is doing, and stop it
//! and every replica it recorded. The router runs where the provider runs, in the first base
//! pool's region, which the plan checks against the endpoint's residency.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigFileError, FabricConfig};
use crate::driver::local;
use crate::process::{self, ProcessError, ProcessRecord};
use crate::status::Status;
use crate::store::{self, StoreError};

/// How long a router may take to come up with its minimum replicas ready, or to finish a reload.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where an endpoint's files live: `state_dir/endpoints/NAME`.
#[derive(Debug, Clone)]
pub struct EndpointDir(pub PathBuf);

impl EndpointDir {
    /// The directory of endpoint `name`.
    pub fn new(state_dir: &Path, name: &str) -> EndpointDir {
        EndpointDir(store::kind_dir(state_dir, "endpoints").join(name))
    }
    /// The router's config file.
    pub fn config(&self) -> PathBuf {
        self.0.join("fabric.toml")
    }
    /// The router's log.
    pub fn log(&self) -> PathBuf {
        self.0.join("router.log")
    }
    fn address(&self) -> PathBuf {
        self.0.join("address")
    }
    fn operator_address(&self) -> PathBuf {
        self.0.join("operator.address")
    }
    /// The endpoint's API keys (see [`crate::gateway::keys`]).
    pub fn keys(&self) -> PathBuf {
        self.0.join("keys.json")
    }
    fn record(&self) -> PathBuf {
        self.0.join("router.json")
    }
    /// Where replicas are recorded.
    pub fn replicas(&self) -> PathBuf {
        self.0.join("replicas")
    }
    /// The provider's record of the endpoint's last applied state.
    pub fn state(&self) -> PathBuf {
        self.0.join("state.json")
    }

    /// The recorded router, if any.
    pub fn read_record(&self) -> Result<Option<RouterRecord>, StoreError> {
        store::read_json(&self.record())
    }

    /// Removes the directory and everything in it.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A deployed router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterRecord {
    /// Its process.
    pub process: ProcessRecord,
    /// `host:port` it listens on.
    pub address: String,
    /// `host:port` of its operator listener (status, metrics, joins forwarded by a daemon);
    /// empty in records of routers from before it had one.
    #[serde(default)]
    pub operator_address: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

impl RouterRecord {
    /// Where its status is asked for: the operator listener (plain HTTP on loopback, open
    /// whatever the endpoint's auth and TLS).
    pub fn status_address(&self) -> &str {
        if self.operator_address.is_empty() {
            &self.address
        } else {
            &self.operator_address
        }
    }
}

/// How a recorded router is doing.
#[derive(Debug, Clone)]
pub enum RouterHealth {
    /// Running and answering; its status.
    Serving(Box<Status>),
    /// Running but not answering status.
    NotAnswering,
    /// Not running.
    Gone,
}

/// One client for every status call: building one per call costs more than the call.
fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default()
    })
}

/// Why a router could not be started, reloaded, asked for its status or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A record in the endpoint's directory cannot be read.
    #[error(transparent)]
    Record(#[from] StoreError),
    /// The router does not answer.
    #[error("cannot reach the router at {base}: {source}")]
    Unreachable {
        /// Its base URL.
        base: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The router answered its status with an error.
    #[error("{base}/fabric/status answered {status}")]
    Status {
        /// Its base URL.
        base: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// What answered is not a gpucap-fabric router.
    #[error("{base}/fabric/status is not a gpucap-fabric status: {source}")]
    NotAStatus {
        /// Its base URL.
        base: String,
        /// Why.
        source: reqwest::Error,
    },
    /// A file of the endpoint's directory cannot be written.
    #[error("cannot {what} {}: {source}", path.display())]
    Write {
        /// `create` or `write`.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config cannot be written.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The router process cannot be started.
    #[error("{0}")]
    Spawn(ProcessError),
    /// The router process cannot be signalled to reload.
    #[error("{0}")]
    Signal(ProcessError),
    /// The router process cannot be stopped.
    #[error("cannot stop the router: {0}")]
    Stop(ProcessError),
    /// The router exited before it converged.
    #[error("the router exited")]
    Exited,
    /// Terraform cancelled the operation.
    #[error("the operation was cancelled")]
    Cancelled,
    /// The router did not reach the state asked for in time.
    #[error("it did not converge within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The router refused the new config.
    #[error("the router refused the new config: {0}")]
    Refused(String),
    /// Replicas outlived the stop.
    #[error("replicas still running: {}", .0.join(", "))]
    ReplicasLeft(Vec<String>),
    /// The router record cannot be removed.
    #[error("{0}")]
    Forget(std::io::Error),
    /// A failure, with the end of the router's log that explains it.
    #[error("{cause}:\n{log}")]
    WithLog {
        /// What failed.
        cause: Box<DeployError>,
        /// The last lines of the router's log.
        log: String,
    },
}

impl DeployError {
    /// The failure itself, without the router's log appended to it.
    pub fn root(&self) -> &DeployError {
        match self {
            DeployError::WithLog { cause, .. } => cause.root(),
            e => e,
        }
    }

    /// The error with the end of the router's log appended.
    fn with_log(self, dir: &EndpointDir) -> DeployError {
        DeployError::WithLog {
            cause: Box::new(self),
            log: process::log_tail(&dir.log()),
        }
    }
}

/// The status document of the router at `url` (its base URL or any URL on it).
pub async fn fetch_status(url: &str) -> Result<Status, DeployError> {
    fetch_status_with(http(), url).await
}

/// [`fetch_status`] through `http` (a client trusting a router's CA, for one with TLS).
pub async fn fetch_status_with(http: &reqwest::Client, url: &str) -> Result<Status, DeployError> {
    let base = match url.find("/v2") {
        Some(i) => &url[..i],
        None => url.trim_end_matches('/'),
    };
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    let resp = http
        .get(format!("{base}/fabric/status"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|source| DeployError::Unreachable {
            base: base.clone(),
            source,
        })?;
    if !resp.status().is_success() {
        return Err(DeployError::Status {
            base,
            status: resp.status(),
        });
    }
    resp.json()
        .await
        .map_err(|source| DeployError::NotAStatus { base, source })
}

/// Checks the recorded router's process and status.
pub async fn health(record: &RouterRecord) -> RouterHealth {
    if !record.process.alive() {
        return RouterHealth::Gone;
    }
    if record.address.is_empty() {
        return RouterHealth::NotAnswering;
    }
    match fetch_status(record.status_address()).await {
        Ok(s) => RouterHealth::Serving(Box::new(s)),
        Err(_) => RouterHealth::NotAnswering,
    }
}

/// Completes the record of a router whose starter died before it converged: once the router
/// has published its address, the record gets it. The record as it stands afterwards.
pub fn complete_record(dir: &EndpointDir) -> Result<Option<RouterRecord>, StoreError> {
    let Some(mut record) = dir.read_record()? else {
        return Ok(None);
    };
    if record.address.is_empty()
        && record.process.alive()
        && let Ok(address) = std::fs::read_to_string(dir.address())
        && !address.is_empty()
    {
        record.address = address;
        record.operator_address =
            std::fs::read_to_string(dir.operator_address()).unwrap_or_default();
        if let Err(e) = store::write_json(&dir.record(), &record) {
            tracing::warn!(error = %e, "cannot complete a router's record");
        }
    }
    Ok(Some(record))
}

/// Writes `config` as the endpoint's router config, with its state and address files in `dir`;
/// returns the file's digest.
fn write_config(dir: &EndpointDir, mut config: FabricConfig) -> Result<String, DeployError> {
    std::fs::create_dir_all(&dir.0).map_err(|source| DeployError::Write {
        what: "create",
        path: dir.0.clone(),
        source,
    })?;
    config.endpoint.address_file = Some(dir.address());
    config.endpoint.operator_address_file = Some(dir.operator_address());
    config.state.dir = dir.0.clone();
    let (text, digest) = config.to_file_text()?;
    process::write_atomically(&dir.config(), &text).map_err(|source| DeployError::Write {
        what: "write",
        path: dir.config(),
        source,
    })?;
    Ok(digest)
}

/// Starts the router with `config` and waits until it serves with at least `min_ready`
/// replicas ready; records it. On failure nothing is left running.
pub async fn start(
    fabric_bin: &Path,
    dir: &EndpointDir,
    config: FabricConfig,
    min_ready: usize,
    cancel: &CancellationToken,
) -> Result<RouterRecord, DeployError> {
    let digest = write_config(dir, config)?;
    let _ = std::fs::remove_file(dir.address());
    let _ = std::fs::remove_file(dir.operator_address());
    let config_path = dir.config();
    let mut child = process::spawn(
        fabric_bin,
        &[
            "serve".as_ref(),
            "--config".as_ref(),
            config_path.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
        ],
        &dir.log(),
    )
    .map_err(DeployError::Spawn)?;
    let record = ProcessRecord::of(&child);
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Recorded at once, without an address: if whoever started it dies before it converges,
    // the next one finds the process (and stops it) instead of starting a second router.
    let starting = RouterRecord {
        process: record.clone(),
        address: String::new(),
        operator_address: String::new(),
        started_at: started_at.clone(),
    };
    if let Err(source) = store::write_json(&dir.record(), &starting) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(DeployError::Write {
            what: "record the router in",
            path: dir.0.clone(),
            source,
        });
    }
    let ready = converge(dir, &record, cancel, |status| {
        (status.router.config_digest == digest && status.ready() >= min_ready).then_some(Ok(()))
    })
    .await;
    let failure = match ready {
        Ok((address, operator_address)) => {
            let router = RouterRecord {
                address,
                operator_address,
                ..starting
            };
            match store::write_json(&dir.record(), &router) {
                Ok(()) => return Ok(router),
                Err(source) => DeployError::Write {
                    what: "record the router in",
                    path: dir.0.clone(),
                    source,
                },
            }
        }
        Err(e) => e,
    };
    // Stop it with a drain (it stops the replicas it started), then make sure.
    let _ = record.stop(Duration::from_secs(10)).await;
    let _ = child.wait();
    stop_replicas(dir, Duration::from_secs(5)).await;
    let _ = store::remove(&dir.record());
    Err(failure.with_log(dir))
}

/// Applies `config` to the running router without a restart (SIGHUP; replicas roll when what
/// they run changed) and waits until it is in force, every replica is on it and at least
/// `min_ready` are ready.
pub async fn reload(
    dir: &EndpointDir,
    router: &RouterRecord,
    config: FabricConfig,
    min_ready: usize,
    cancel: &CancellationToken,
) -> Result<(), DeployError> {
    let digest = write_config(dir, config)?;
    let before = hang_up(router).await?;
    converge(dir, &router.process, cancel, |status| {
        let r = &status.router;
        if r.reloads <= before {
            None
        } else if r.config_digest == digest && r.rollout_pending == 0 && status.ready() >= min_ready
        {
            Some(Ok(()))
        } else if r.config_digest != digest {
            r.reload_error
                .as_ref()
                .map(|e| Err(DeployError::Refused(e.clone())))
        } else {
            None
        }
    })
    .await
    .map(|_| ())
    .map_err(|e| e.with_log(dir))
}

/// Makes the running router read its API keys again (SIGHUP; nothing else changes, no replica
/// restarts) and waits until they are in force.
pub async fn reload_keys(
    dir: &EndpointDir,
    router: &RouterRecord,
    cancel: &CancellationToken,
) -> Result<(), DeployError> {
    let before = hang_up(router).await?;
    converge(dir, &router.process, cancel, |status| {
        let r = &status.router;
        (r.reloads > before).then(|| match &r.reload_error {
            Some(e) => Err(DeployError::Refused(e.clone())),
            None => Ok(()),
        })
    })
    .await
    .map(|_| ())
}

/// Sends the router SIGHUP; the reloads it had counted before, so that a verdict judges this
/// reload (its refusal, not an earlier one still shown in status).
async fn hang_up(router: &RouterRecord) -> Result<u64, DeployError> {
    let before = fetch_status(router.status_address()).await?.router.reloads;
    router
        .process
        .signal(Signal::SIGHUP)
        .map_err(DeployError::Signal)?;
    Ok(before)
}

/// Polls the router's status until `verdict` decides, the router exits, the operation is
/// cancelled or [`CONVERGE_TIMEOUT`] passes; the router's address and its operator listener's
/// when the verdict is Ok.
async fn converge(
    dir: &EndpointDir,
    router: &ProcessRecord,
    cancel: &CancellationToken,
    mut verdict: impl FnMut(&Status) -> Option<Result<(), DeployError>>,
) -> Result<(String, String), DeployError> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        if !router.alive() {
            return Err(DeployError::Exited);
        }
        if cancel.is_cancelled() {
            return Err(DeployError::Cancelled);
        }
        if Instant::now() > deadline {
            return Err(DeployError::Timeout(CONVERGE_TIMEOUT));
        }
        // The operator address is written first: once the public one is there, both are.
        if let Ok(address) = std::fs::read_to_string(dir.address())
            && let Ok(operator) = std::fs::read_to_string(dir.operator_address())
            && let Ok(status) = fetch_status(&operator).await
            && let Some(v) = verdict(&status)
        {
            return v.map(|()| (address, operator));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the router (it drains: answers what it accepted, then drains and stops its replicas),
/// then anything it left behind, and forgets it.
pub async fn stop(dir: &EndpointDir, drain: Duration) -> Result<(), DeployError> {
    if let Some(router) = dir.read_record()? {
        // Its own drain of requests, then of every replica, each up to `drain`.
        router
            .process
            .stop(
                drain
                    .saturating_mul(2)
                    .saturating_add(Duration::from_secs(10)),
            )
            .await
            .map_err(DeployError::Stop)?;
    }
    stop_replicas(dir, drain).await;
    let left: Vec<String> = local::records(&dir.replicas())
        .into_iter()
        .flatten()
        .filter(|r| r.process.as_ref().is_some_and(ProcessRecord::alive))
        .map(|r| r.id)
        .collect();
    if !left.is_empty() {
        return Err(DeployError::ReplicasLeft(left));
    }
    store::remove(&dir.record()).map_err(DeployError::Forget)
}

/// Stops every replica recorded for the endpoint (a router that died leaves them running).
async fn stop_replicas(dir: &EndpointDir, drain: Duration) {
    for r in local::records(&dir.replicas()).into_iter().flatten() {
        if let Err(e) = local::stop_record(&dir.replicas(), &r, drain).await {
            tracing::warn!(replica = %r.id, error = %e, "cannot stop a replica");
        }
    }
}
