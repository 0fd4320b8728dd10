//! Capacity drivers, behind one trait: start a replica on a pool, stop it, list what runs there,
//! report the pool's capacity. The router and the provider only see [`Driver`], so a pool on this
//! host and a pool in a cloud are handled alike.

pub mod aws;
pub mod joined;
pub mod local;
pub mod slurm;
pub mod slurm_api;

use std::time::Duration;

use async_trait::async_trait;
use gpucap_runtime::config::BatchingSection;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ApiCallLabels, NameLabels};
use crate::process::ProcessRecord;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// What a remote driver counts of its API calls (Auto Scaling, slurmrestd).
#[derive(Clone)]
pub struct ApiMetrics {
    /// Calls made, by pool and action.
    pub calls: Family<ApiCallLabels, Counter>,
    /// Calls failed, by pool.
    pub errors: Family<NameLabels, Counter>,
}

/// What a pool can hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// Replicas it holds at most.
    pub slots: usize,
    /// The devices replicas get (`cpu`, `cuda:0`, …).
    pub devices: Vec<String>,
}

/// What a new replica serves and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    /// Its id, unique within the endpoint.
    pub id: String,
    /// The model file.
    pub model_path: std::path::PathBuf,
    /// The model's name in URLs.
    pub model_name: String,
    /// The model's version.
    pub model_version: String,
    /// Batching.
    pub batching: BatchingSection,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Digest of all of the above: a replica with another digest is outdated.
    pub digest: String,
}

/// A replica as a driver records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// Its id.
    pub id: String,
    /// Its pool.
    pub pool: String,
    /// `host:port` it serves on; empty while it starts (it is recorded as soon as its process
    /// exists, so that nothing a crash interrupts is left running unrecorded).
    pub address: String,
    /// Which of the pool's slots it holds.
    pub slot: usize,
    /// The device it computes on.
    pub device: String,
    /// Its process, for drivers that run processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessRecord>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The [`ReplicaSpec::digest`] it was started with.
    pub digest: String,
}

/// Why a driver could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DriverError(pub String);

impl From<crate::process::ProcessError> for DriverError {
    fn from(e: crate::process::ProcessError) -> Self {
        DriverError(e.to_string())
    }
}

/// Reaches one pool's capacity.
#[async_trait]
pub trait Driver: Send + Sync {
    /// What the pool holds.
    fn capacity(&self) -> Capacity;
    /// Starts a replica and returns once it is ready (or failed: then nothing is left running).
    async fn start(
        &self,
        spec: &ReplicaSpec,
        cancel: &CancellationToken,
    ) -> Result<ReplicaRecord, DriverError>;
    /// Stops a replica: it finishes what it accepted within `drain`, then is stopped for good.
    async fn stop(&self, replica: &ReplicaRecord, drain: Duration) -> Result<(), DriverError>;
    /// The replicas recorded on this pool that still run; records of ones that do not are
    /// cleaned up.
    fn list(&self) -> Result<Vec<ReplicaRecord>, DriverError>;
    /// Whether a replica still runs.
    fn alive(&self, replica: &ReplicaRecord) -> bool;
    /// Whether `machine` (an instance id, a node) is this pool's and may join the router. Pools
    /// whose replicas the router starts itself admit none.
    async fn admit(&self, machine: &str) -> Result<(), DriverError> {
        Err(DriverError(format!(
            "{machine}: this pool's replicas are started by the router; none join it"
        )))
    }
    /// SHA-256 (hex) of the join token the driver itself hands the replicas it starts (a Slurm
    /// job carries it in its environment); accepted beside the pool's configured tokens.
    fn join_token_sha256(&self) -> Option<String> {
        None
    }
    /// When `replica` should be replaced because the capacity under it ends (a Slurm job's
    /// time limit, less the time a successor needs); `None` for capacity without an end.
    fn replace_at(&self, _replica: &ReplicaRecord) -> Option<std::time::SystemTime> {
        None
    }
    /// Takes `machine`, which joined this pool (at `address`) and serves no replica, as the
    /// replica `spec`: it outlived a restarted router, or its group grew by hand. Pools whose
    /// replicas the router starts itself have no such machines.
    async fn adopt_joined(
        &self,
        spec: &ReplicaSpec,
        machine: String,
        address: String,
    ) -> Result<ReplicaRecord, DriverError> {
        let _ = (spec, address);
        Err(DriverError(format!(
            "{machine}: this pool's replicas are started by the router; none join it"
        )))
    }
}
