//! The router's config file (`gpucap-fabric serve --config FILE`, TOML). The provider writes it
//! from an endpoint's plan; people can write it by hand. [`FabricConfig::validate`] checks it once,
//! naming the key at fault and what is valid, and refuses any pool outside the endpoint's data
//! residency.
//!
//! The config carries the endpoint's placement already resolved: `[[pools]]` in spill order, each
//! with its role (`base` or `burst`). Resolving names and ordering burst pools (`ordered`,
//! `cheapest`) is done once, by the placement the provider and the policy engine share
//! (`gpucap_policy::placement`); the fabric never resolves names.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use gpucap_runtime::config::BatchingSection;
use gpucap_runtime::config::check_name;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::autoscaler::{Budget, ScalingPolicy};
pub use crate::capacity::CapacityType;
pub use crate::gateway::{AuthMode, AuthSection};
pub use crate::tls::TlsSection;

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FabricConfig {
    /// The endpoint the router serves.
    pub endpoint: EndpointSection,
    /// The model its replicas serve.
    pub model: ModelSection,
    /// Dynamic batching in each replica.
    #[serde(default)]
    pub batching: BatchingSection,
    /// How many replicas may run.
    #[serde(default)]
    pub replicas: ReplicasSection,
    /// Where the endpoint's data may be processed.
    #[serde(default)]
    pub residency: ResidencySection,
    /// The burst policy's scaling, budget and fallback; without one the defaults apply (replicas
    /// stay at `replicas.min`, started from zero on demand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySection>,
    /// Every pool the router may use.
    #[serde(default)]
    pub pools: Vec<PoolSection>,
    /// The replicas' binary.
    pub runtime: RuntimeSection,
    /// Where the router keeps its records.
    pub state: StateSection,
    /// Who may call the endpoint (API keys); open to anyone who reaches it when absent.
    #[serde(default, skip_serializing_if = "is_open")]
    pub auth: AuthSection,
    /// TLS (and optionally mTLS) on the router's listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
}

fn is_open(auth: &AuthSection) -> bool {
    *auth == AuthSection::default()
}

/// `[endpoint]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    /// The endpoint's (and model's) name.
    pub name: String,
    /// `host:port` the router listens on; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where the router itself runs (it processes the data): the first base pool's region unless
    /// stated; it must be an allowed region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_region: Option<String>,
    /// Largest request body accepted, in bytes; larger ones get 413 at the router.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Requests the router may hold while no replica has room (scale from zero, saturation);
    /// more get 429. Default: `batching.queue_capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_capacity: Option<usize>,
    /// Requests in flight per replica before it counts as saturated (and load spills to burst
    /// pools). Default: `batching.max_batch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_concurrency: Option<usize>,
    /// Once listening, the bound `host:port` is written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_file: Option<PathBuf>,
    /// `host:port` of the operator listener (`/fabric/status`, `/fabric/targets`, `/metrics`,
    /// plain HTTP): default `127.0.0.1:0`. With `auth.mode = "api_key"` those routes are served
    /// only here, never to API-key holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_listen: Option<String>,
    /// Once listening, the operator listener's bound `host:port` is written here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_address_file: Option<PathBuf>,
}

impl EndpointSection {
    /// The endpoint `name` listening on `listen`, every other setting at its default.
    pub fn new(name: &str, listen: String) -> EndpointSection {
        EndpointSection {
            name: name.to_string(),
            listen,
            router_region: None,
            max_body_bytes: default_max_body(),
            hold_capacity: None,
            replica_concurrency: None,
            address_file: None,
            operator_listen: None,
            operator_address_file: None,
        }
    }
}

/// `[model]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// The version reported.
    #[serde(default = "default_version")]
    pub version: String,
}

/// `[replicas]`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicasSection {
    /// Fewest replicas; 0 scales to zero when idle.
    pub min: usize,
    /// Most replicas, across every pool.
    pub max: usize,
}

impl ResidencySection {
    /// Why `pool` may not be used, or `None` when it may. The fabric's own check, independent of
    /// the plan's: defence in depth.
    fn refuses(&self, pool: &Pool) -> Option<String> {
        let outside = |allowed: &Option<Vec<String>>, value: &str, what: &str| {
            let allowed = allowed.as_ref()?;
            (!allowed.iter().any(|a| a == value)).then(|| {
                let list = if allowed.is_empty() {
                    "(none)".to_string()
                } else {
                    allowed.join(", ")
                };
                format!("its {what} {value:?} is not one of {list}")
            })
        };
        let reasons: Vec<String> = [
            outside(
                &self.allowed_jurisdictions,
                &pool.jurisdiction,
                "jurisdiction",
            ),
            outside(&self.allowed_regions, &pool.region, "region"),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!reasons.is_empty()).then(|| {
            format!(
                "pool {:?} (region {:?}) is outside the endpoint's data residency: {}",
                pool.name,
                pool.region,
                reasons.join("; ")
            )
        })
    }
}

/// `[residency]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResidencySection {
    /// Jurisdictions every pool must be in, when restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_jurisdictions: Option<Vec<String>>,
    /// Regions every pool must be in, when restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_regions: Option<Vec<String>>,
}

/// `[policy]`: how the burst policy scales, as `gpucap_burst_policy` declares it (its pools are
/// the `[[pools]]`, in spill order).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Its name (for status and logs).
    pub name: String,
    /// `none` or `on_demand`.
    #[serde(default = "default_spot_fallback")]
    pub spot_fallback: String,
    /// When to add capacity.
    #[serde(default)]
    pub scale_up: ScaleUpSection,
    /// When to release it.
    #[serde(default)]
    pub scale_down: ScaleDownSection,
    /// The cap on burst spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSection>,
    /// Start replicas a cold start ahead of the load's recurring daily and weekly rises, as
    /// learned from what the router has seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub predictive: bool,
}

/// `[policy.scale_up]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScaleUpSection {
    /// Requests waiting per serving replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<f64>,
    /// The router's p99 latency over the last 10 s, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_latency_ms: Option<f64>,
    /// Busy fraction of the serving replicas' devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f64>,
    /// How long demand must hold before the fleet grows for it.
    #[serde(rename = "for", default = "default_for")]
    pub sustain: String,
    /// Demand is averaged over this for the count the fleet keeps (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window: Option<String>,
    /// Demand is averaged over this for growth and panics (default 6s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_window: Option<String>,
    /// Grow at once when the panic window's demand needs this many times the serving replicas
    /// (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_threshold: Option<f64>,
}

/// `[policy.scale_down]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScaleDownSection {
    /// Idle time before a replica above the minimum is drained.
    #[serde(default = "default_idle_for")]
    pub idle_for: String,
    /// Burst replicas kept running however idle.
    #[serde(default)]
    pub min_warm_replicas: usize,
    /// How long a draining replica may take to finish what it accepted.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: String,
}

/// `[policy.budget]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    /// USD per hour burst replicas may cost together.
    pub max_hourly_usd: f64,
    /// `queue` or `reject`.
    #[serde(default = "default_on_exhausted")]
    pub on_exhausted: String,
}

/// `[[pools]]`, in spill order: load goes to base pools first, then to burst pools in the order
/// listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Its name.
    pub name: String,
    /// `base` (carries the baseline) or `burst` (takes load only while the base is saturated).
    #[serde(default = "default_role")]
    pub role: String,
    /// Its region.
    pub region: String,
    /// Its jurisdiction.
    pub jurisdiction: String,
    /// `on_prem`, `reserved`, `on_demand` or `spot`.
    #[serde(default = "default_capacity_type")]
    pub capacity_type: String,
    /// USD per GPU-hour; burst spend is metered with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<f64>,
    /// Replicas the pool holds at most (`nodes.max × gpu.per_node`, one replica per GPU).
    pub gpus_max: usize,
    /// The `local` driver: replicas are runtime processes on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSection>,
    /// The `aws_autoscaling_group` driver: replicas run on the group's instances, which join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_autoscaling_group: Option<AwsGroupSection>,
    /// The `slurm` driver: each replica is a Slurm job that joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSection>,
    /// SHA-256 (hex) of each token a replica of this pool may join with (two while one rotates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join_token_sha256: Vec<String>,
}

/// `[pools.slurm]`: a partition of a Slurm cluster reached through `slurmrestd`. Each replica is a
/// batch job whose script runs `gpucap-runtime serve --join` on the node Slurm picks. The REST
/// token (a JWT) comes from `token_file` or `SLURM_JWT`, never from here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlurmSection {
    /// `slurmrestd`'s base URL (`http://host:6820`).
    pub rest_url: String,
    /// The REST API's version (default `v0.0.38`, Slurm 22.05's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The Slurm user jobs are submitted as (default: this process's `USER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A file holding the JWT for `user` (default: the `SLURM_JWT` environment variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The partition jobs go to.
    pub partition: String,
    /// The account jobs are charged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The QOS jobs run under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// The generic resources each job asks for (`gpu:1`); none for CPU-only pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// Each job's time limit (`24h`); the cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<String>,
    /// The URL the jobs' replicas join (the daemon's `/v1/join/ENDPOINT`).
    pub join_url: String,
    /// A file holding the pool's join token, handed to the jobs (its hash is accepted). Unset,
    /// the router mints the pool's token itself and keeps it in its state directory: nothing
    /// but the fabric submits these jobs, so nothing else needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token_file: Option<PathBuf>,
    /// CA certificates the replicas verify the daemon with (a path on the nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// `gpucap-runtime` on the nodes (default: `[runtime] path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_path: Option<PathBuf>,
    /// The replica's `--device` (default `auto`: the GPUs Slurm gave the job, else the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The replica's `--threads` for CPU compute (default: every core the job has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// The jobs' working directory on the nodes, where their output goes (default `/tmp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<PathBuf>,
    /// How long a job may wait in the queue before the start gives up (default `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<String>,
    /// How long a running job's replica may take to join (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_timeout: Option<String>,
    /// How long before a job's time limit its replica is replaced: its successor is submitted
    /// then, and it drains once the successor serves (default `10m`; under `time_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_before: Option<String>,
    /// Whether the model's path is on a filesystem every node shares: the replicas read it
    /// there (after checking its SHA-256) instead of fetching it over their connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_model: Option<bool>,
}

/// `[pools.aws_autoscaling_group]`: an existing EC2 Auto Scaling group in the pool's region.
/// Credentials come from the standard AWS chain of the process (environment, profile, instance
/// role); they never appear here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsGroupSection {
    /// The group's name.
    pub name: String,
    /// A named profile of the shared AWS config to take credentials from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The API endpoint, for an emulator or a private endpoint (else `AWS_ENDPOINT_URL` or AWS's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// How long an instance may take from launch to joining (default `5m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_timeout: Option<String>,
}

/// `[pools.local]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    /// `auto`, `cpu` or `cuda:0,cuda:1`.
    #[serde(default = "default_devices")]
    pub devices: String,
    /// The runtime binary for this pool, when it differs from `[runtime] path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_path: Option<PathBuf>,
}

/// `[runtime]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// The `gpucap-runtime` binary.
    pub path: PathBuf,
}

/// `[state]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The endpoint's directory: replica records and logs live under it.
    pub dir: PathBuf,
    /// The pool ledger shared by every router on this host (see [`crate::ledger`]); unset, the
    /// endpoint keeps one of its own under `dir/ledger`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_dir: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:0".into()
}
fn default_max_body() -> usize {
    64 << 20
}
fn default_version() -> String {
    "1".into()
}
fn default_spot_fallback() -> String {
    "none".into()
}
fn default_for() -> String {
    "1m".into()
}
fn default_idle_for() -> String {
    "10m".into()
}
fn default_drain_timeout() -> String {
    "30s".into()
}
fn default_on_exhausted() -> String {
    "queue".into()
}
fn default_role() -> String {
    "base".into()
}
fn default_capacity_type() -> String {
    "on_prem".into()
}
fn default_devices() -> String {
    "auto".into()
}

impl Default for ReplicasSection {
    fn default() -> Self {
        ReplicasSection { min: 1, max: 1 }
    }
}

impl Default for ScaleUpSection {
    fn default() -> Self {
        ScaleUpSection {
            queue_depth: None,
            p99_latency_ms: None,
            gpu_utilization: None,
            sustain: default_for(),
            stable_window: None,
            panic_window: None,
            panic_threshold: None,
        }
    }
}

impl Default for ScaleDownSection {
    fn default() -> Self {
        ScaleDownSection {
            idle_for: default_idle_for(),
            min_warm_replicas: 0,
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// A setting that cannot be used, named by its key (`field`, e.g. `policy.scale_up.for` or
/// `pools[1]`) with what is wrong and what would be valid: the runtime's config error, so both
/// files report alike.
pub use gpucap_runtime::config::{ConfigError, ConfigFileError};

fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: key.into(),
        message: message.into(),
    }
}

/// How a pool is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverConfig {
    /// Runtime processes on this host.
    Local {
        /// The pool's device list.
        devices: String,
        /// The runtime binary.
        runtime_path: PathBuf,
    },
    /// An EC2 Auto Scaling group whose instances join.
    AwsAutoscalingGroup {
        /// The group.
        group: String,
        /// The AWS profile, if not the default chain's.
        profile: Option<String>,
        /// The API endpoint, if not AWS's.
        endpoint_url: Option<String>,
        /// How long an instance may take from launch to joining.
        join_timeout: Duration,
    },
    /// A Slurm partition whose jobs join.
    Slurm(Box<SlurmConfig>),
}

/// A Slurm pool's settings, validated ([`SlurmSection`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmConfig {
    /// `slurmrestd`, and the user jobs are submitted as.
    pub rest: crate::driver::slurm_api::SlurmRef,
    /// The partition.
    pub partition: String,
    /// The account.
    pub account: Option<String>,
    /// The QOS.
    pub qos: Option<String>,
    /// The generic resources per job.
    pub gres: Option<String>,
    /// The time limit, in whole minutes.
    pub time_limit_minutes: Option<u64>,
    /// What replicas join.
    pub join_url: String,
    /// The pool's join token's file.
    pub join_token_file: PathBuf,
    /// Whether the router made that file (and makes it again when it is missing).
    pub join_token_minted: bool,
    /// The daemon's CA on the nodes.
    pub ca_cert: Option<PathBuf>,
    /// The runtime on the nodes.
    pub runtime_path: PathBuf,
    /// The replica's device.
    pub device: String,
    /// The replica's CPU threads.
    pub threads: Option<usize>,
    /// The jobs' working directory.
    pub work_dir: PathBuf,
    /// Longest wait in the queue.
    pub queue_timeout: Duration,
    /// Longest wait from running to joined.
    pub join_timeout: Duration,
    /// How long before its time limit a job's replica is replaced.
    pub replace_before: Duration,
    /// How long before its time limit a job's replica is sent `SIGTERM` to drain (half of
    /// `replace_before`, at most two minutes: after its successor was started).
    pub warning: Duration,
    /// Whether the replicas read the model from its path, shared by the nodes.
    pub shared_model: bool,
}

/// A pool the router uses, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Its jurisdiction.
    pub jurisdiction: String,
    /// What kind of capacity it is.
    pub capacity_type: CapacityType,
    /// USD per GPU-hour (one replica holds one GPU), when known.
    pub price_per_gpu_hour: Option<f64>,
    /// Replicas it holds at most.
    pub slots: usize,
    /// Whether it is a burst pool (else base).
    pub burst: bool,
    /// Its driver; `None` only in configs checked for simulation, which start nothing.
    pub driver: Option<DriverConfig>,
    /// SHA-256 (hex) of the tokens replicas of this pool may join with.
    pub join_token_sha256: Vec<String>,
}

/// The config after validation, in the types the router uses.
#[derive(Debug, Clone)]
pub struct Fabric {
    /// The endpoint's (and model's) name.
    pub name: String,
    /// The burst policy's name, when there is one.
    pub policy_name: Option<String>,
    /// Where to listen.
    pub listen: String,
    /// Where to write the bound address.
    pub address_file: Option<PathBuf>,
    /// Where the operator routes listen.
    pub operator_listen: String,
    /// Where to write the operator listener's bound address.
    pub operator_address_file: Option<PathBuf>,
    /// Whether metadata and inference need an API key.
    pub auth_required: bool,
    /// The API keys file.
    pub keys_file: PathBuf,
    /// TLS on the listener.
    pub tls: Option<TlsSection>,
    /// The region the router runs in.
    pub router_region: String,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Requests the router may hold.
    pub hold_capacity: usize,
    /// In-flight requests per replica before it is saturated.
    pub replica_concurrency: usize,
    /// How long a request may take at most, held time included.
    pub request_timeout: Duration,
    /// The model file.
    pub model_path: PathBuf,
    /// The model version.
    pub model_version: String,
    /// Replica batching.
    pub batching: BatchingSection,
    /// The pools in placement order: base pools, then burst pools in spill order.
    pub pools: Vec<Pool>,
    /// What the autoscaler acts on.
    pub scaling: ScalingPolicy,
    /// Where replica records live.
    pub state_dir: PathBuf,
    /// Where the host's pool ledger lives.
    pub ledger_dir: PathBuf,
    /// Hash of the file as read: the provider waits for the router to report it after a reload.
    pub config_digest: String,
}

impl FabricConfig {
    /// Reads and parses `path`; errors carry the file name, line and column.
    pub fn from_file(path: &Path) -> Result<(FabricConfig, String), ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Ok((config, digest(&text)))
    }

    /// This config as the file text the router reads, and that text's digest.
    pub fn to_file_text(&self) -> Result<(String, String), ConfigFileError> {
        let text = toml::to_string(self)?;
        let d = digest(&text);
        Ok((text, d))
    }

    /// Checks every setting, resolves placement and enforces residency. `config_digest` is
    /// carried through to status.
    pub fn validate(&self, config_digest: &str) -> Result<Fabric, ConfigError> {
        self.checked(config_digest, true)
    }

    /// Checks every setting as [`validate`](Self::validate) does, except that pools need no
    /// driver: what `simulate` runs, which starts nothing.
    pub fn validate_for_simulation(&self) -> Result<Fabric, ConfigError> {
        self.checked("", false)
    }

    fn checked(&self, config_digest: &str, need_drivers: bool) -> Result<Fabric, ConfigError> {
        let e = &self.endpoint;
        check_name("endpoint.name", &e.name)?;
        check_name("model.version", &self.model.version)?;
        in_range("endpoint.max_body_bytes", e.max_body_bytes, 1024, 1 << 32)?;
        let b = &self.batching;
        b.validate()?;
        let r = self.replicas;
        in_range("replicas.max", r.max, 1, 10_000)?;
        if r.min > r.max {
            return Err(bad(
                "replicas.min",
                format!("{} is more than replicas.max ({})", r.min, r.max),
            ));
        }
        let hold_capacity = e.hold_capacity.unwrap_or(b.queue_capacity);
        in_range("endpoint.hold_capacity", hold_capacity, 1, 1_000_000)?;
        let replica_concurrency = e.replica_concurrency.unwrap_or(b.max_batch_size);
        in_range(
            "endpoint.replica_concurrency",
            replica_concurrency,
            1,
            1_000_000,
        )?;

        let pools = self.checked_pools(need_drivers)?;
        // Defence in depth behind the plan-time check: a pool outside the residency is refused,
        // so no code path can ever send data there.
        for (i, pool) in pools.iter().enumerate() {
            if let Some(why) = self.residency.refuses(pool) {
                return Err(bad(
                    format!("pools[{i}]"),
                    format!("{why}; the router refuses to load it"),
                ));
            }
        }
        // Base pools first, each role in the order listed.
        let (base, burst): (Vec<Pool>, Vec<Pool>) = pools.into_iter().partition(|p| !p.burst);
        if base.is_empty() {
            return Err(bad(
                "pools",
                "no base pool; give at least one pool role = \"base\" to carry the baseline",
            ));
        }
        let ordered: Vec<Pool> = base.into_iter().chain(burst).collect();
        let policy_name = self.policy.as_ref().map(|p| p.name.clone());
        let router_region = match &e.router_region {
            Some(r) => r.clone(),
            None => ordered
                .first()
                .map(|p| p.region.clone())
                .unwrap_or_default(),
        };
        if let Some(allowed) = &self.residency.allowed_regions
            && !allowed.contains(&router_region)
        {
            return Err(bad(
                "endpoint.router_region",
                format!(
                    "the router processes the endpoint's data, but its region {router_region:?} is not one of {}",
                    allowed.join(", ")
                ),
            ));
        }
        let scaling = self.scaling(&ordered, replica_concurrency)?;
        Ok(Fabric {
            name: e.name.clone(),
            policy_name,
            listen: e.listen.clone(),
            address_file: e.address_file.clone(),
            operator_listen: e.operator_listen.clone().unwrap_or_else(default_listen),
            operator_address_file: e.operator_address_file.clone(),
            auth_required: self.auth.mode == AuthMode::ApiKey,
            keys_file: self
                .auth
                .keys_file
                .clone()
                .unwrap_or_else(|| self.state.dir.join("keys.json")),
            tls: self.tls.clone(),
            router_region,
            max_body_bytes: e.max_body_bytes,
            hold_capacity,
            replica_concurrency,
            request_timeout: Duration::from_millis(b.request_timeout_ms),
            model_path: self.model.path.clone(),
            model_version: self.model.version.clone(),
            batching: *b,
            pools: ordered,
            scaling,
            state_dir: self.state.dir.clone(),
            ledger_dir: self
                .state
                .ledger_dir
                .clone()
                .unwrap_or_else(|| self.state.dir.join("ledger")),
            config_digest: config_digest.to_string(),
        })
    }

    fn checked_pools(&self, need_drivers: bool) -> Result<Vec<Pool>, ConfigError> {
        let mut out: Vec<Pool> = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            let key = |k: &str| format!("pools[{i}].{k}");
            check_name(&key("name"), &p.name)?;
            if out.iter().any(|o| o.name == p.name) {
                return Err(bad(
                    key("name"),
                    format!("pool {:?} is listed twice", p.name),
                ));
            }
            if p.region.trim().is_empty() {
                return Err(bad(key("region"), "empty; name the pool's region or site"));
            }
            if p.jurisdiction.trim().is_empty() {
                return Err(bad(key("jurisdiction"), "empty; e.g. \"EU\""));
            }
            // A config may come from anyone who can reach the router or a daemon's API, not only
            // from a plan: a known region's jurisdiction is derived here exactly as the provider
            // derives it, so a pool cannot be relabelled into the residency.
            if let Some(r) = crate::regions::lookup(&p.region)
                && r.jurisdiction != p.jurisdiction
            {
                return Err(bad(
                    key("jurisdiction"),
                    format!(
                        "region {:?} ({}, {}) is in jurisdiction {:?}, not {:?}",
                        p.region, r.location, r.country, r.jurisdiction, p.jurisdiction
                    ),
                ));
            }
            one_of(&key("role"), &p.role, &["base", "burst"])?;
            let capacity_type = CapacityType::parse(&p.capacity_type).ok_or_else(|| {
                bad(
                    key("capacity_type"),
                    format!(
                        "{:?} is not valid; use on_prem, reserved, on_demand or spot",
                        p.capacity_type
                    ),
                )
            })?;
            if let Some(price) = p.price_per_gpu_hour
                && !(price.is_finite() && price >= 0.0)
            {
                return Err(bad(
                    key("price_per_gpu_hour"),
                    format!("{price} is not a price ≥ 0"),
                ));
            }
            in_range(&key("gpus_max"), p.gpus_max, 1, 100_000)?;
            for (j, hash) in p.join_token_sha256.iter().enumerate() {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(
                        key(&format!("join_token_sha256[{j}]")),
                        "not a SHA-256 in hex (64 digits); a gpucap_join_token's sha256 is one",
                    ));
                }
            }
            let drivers = [
                p.local.is_some().then_some("[pools.local]"),
                p.aws_autoscaling_group
                    .is_some()
                    .then_some("[pools.aws_autoscaling_group]"),
                p.slurm.is_some().then_some("[pools.slurm]"),
            ];
            let named: Vec<&str> = drivers.into_iter().flatten().collect();
            if named.len() > 1 {
                return Err(bad(
                    format!("pools[{i}]"),
                    format!("has {}; a pool has exactly one driver", named.join(" and ")),
                ));
            }
            // At most one of the three is set (checked above): whichever it is decides.
            let driver = match (&p.local, &p.aws_autoscaling_group, &p.slurm) {
                (_, _, Some(slurm)) => Some(DriverConfig::Slurm(Box::new(
                    self.slurm_config(&p.name, slurm, &key)?,
                ))),
                (_, Some(group), None) => {
                    if group.name.trim().is_empty() {
                        return Err(bad(key("aws_autoscaling_group.name"), "is empty"));
                    }
                    if p.join_token_sha256.is_empty() {
                        return Err(bad(
                            key("join_token_sha256"),
                            "is empty: the group's instances join with a token, so the pool needs at least one",
                        ));
                    }
                    let join_timeout = match &group.join_timeout {
                        Some(t) => humantime::parse_duration(t).map_err(|e| {
                            bad(
                                key("aws_autoscaling_group.join_timeout"),
                                format!("{t:?}: {e}"),
                            )
                        })?,
                        None => Duration::from_secs(300),
                    };
                    Some(DriverConfig::AwsAutoscalingGroup {
                        group: group.name.clone(),
                        profile: group.profile.clone(),
                        endpoint_url: group.endpoint_url.clone(),
                        join_timeout,
                    })
                }
                (Some(local), None, None) => {
                    local
                        .devices
                        .parse::<gpucap_runtime::backend::DeviceSpec>()
                        .map_err(|e| bad(key("local.devices"), e.to_string()))?;
                    Some(DriverConfig::Local {
                        devices: local.devices.clone(),
                        runtime_path: local
                            .runtime_path
                            .clone()
                            .unwrap_or_else(|| self.runtime.path.clone()),
                    })
                }
                (None, None, None) if !need_drivers => None,
                (None, None, None) => {
                    return Err(bad(
                        format!("pools[{i}]"),
                        "no driver; add a [pools.local] table (replicas run on this host), [pools.aws_autoscaling_group] or [pools.slurm]",
                    ));
                }
            };
            out.push(Pool {
                name: p.name.clone(),
                region: p.region.clone(),
                jurisdiction: p.jurisdiction.clone(),
                capacity_type,
                price_per_gpu_hour: p.price_per_gpu_hour,
                slots: p.gpus_max,
                burst: p.role == "burst",
                driver,
                join_token_sha256: p
                    .join_token_sha256
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            });
        }
        Ok(out)
    }

    fn slurm_config(
        &self,
        pool: &str,
        slurm: &SlurmSection,
        key: &dyn Fn(&str) -> String,
    ) -> Result<SlurmConfig, ConfigError> {
        let required = |value: &str, field: &str| {
            if value.trim().is_empty() {
                Err(bad(key(&format!("slurm.{field}")), "is empty"))
            } else {
                Ok(())
            }
        };
        required(&slurm.partition, "partition")?;
        required(&slurm.join_url, "join_url")?;
        let rest_url = slurm.rest_url.trim_end_matches('/').to_string();
        if !(rest_url.starts_with("http://") || rest_url.starts_with("https://")) {
            return Err(bad(
                key("slurm.rest_url"),
                format!("{rest_url:?} is not an http:// or https:// URL"),
            ));
        }
        let duration = |value: &Option<String>, field: &str, default: Duration| match value {
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| bad(key(&format!("slurm.{field}")), format!("{t:?}: {e}"))),
            None => Ok(default),
        };
        let time_limit_minutes = match &slurm.time_limit {
            Some(_) => {
                let limit = duration(&slurm.time_limit, "time_limit", Duration::ZERO)?;
                if limit < Duration::from_secs(60) {
                    return Err(bad(
                        key("slurm.time_limit"),
                        "is under a minute, Slurm's smallest time limit",
                    ));
                }
                Some(limit.as_secs() / 60)
            }
            None => None,
        };
        // Ten minutes ahead by default; half the job for limits under twenty minutes.
        let default_ahead = time_limit_minutes
            .map(|m| Duration::from_secs(m * 30))
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(600));
        let replace_before = duration(&slurm.replace_before, "replace_before", default_ahead)?;
        if let Some(minutes) = time_limit_minutes
            && replace_before >= Duration::from_secs(minutes * 60)
        {
            return Err(bad(
                key("slurm.replace_before"),
                format!(
                    "{} is not shorter than time_limit ({minutes}m): every job would be replaced as soon as it runs",
                    humantime::format_duration(replace_before)
                ),
            ));
        }
        let warning = Duration::from_secs((replace_before.as_secs() / 2).clamp(1, 120));
        let user = match &slurm.user {
            Some(u) => u.clone(),
            None => std::env::var("USER").map_err(|_| {
                bad(
                    key("slurm.user"),
                    "is not set and neither is USER; name the Slurm user jobs are submitted as",
                )
            })?,
        };
        let device = slurm.device.clone().unwrap_or_else(|| "auto".into());
        device
            .parse::<gpucap_runtime::backend::DeviceSpec>()
            .map_err(|e| bad(key("slurm.device"), e.to_string()))?;
        Ok(SlurmConfig {
            rest: crate::driver::slurm_api::SlurmRef {
                rest_url,
                api_version: slurm
                    .api_version
                    .clone()
                    .unwrap_or_else(|| crate::driver::slurm_api::DEFAULT_API_VERSION.into()),
                user,
                token_file: slurm.token_file.clone(),
            },
            partition: slurm.partition.clone(),
            account: slurm.account.clone(),
            qos: slurm.qos.clone(),
            gres: slurm.gres.clone(),
            time_limit_minutes,
            join_url: slurm.join_url.clone(),
            join_token_file: slurm
                .join_token_file
                .clone()
                .unwrap_or_else(|| self.state.dir.join(format!("slurm-{pool}.join-token"))),
            join_token_minted: slurm.join_token_file.is_none(),
            ca_cert: slurm.ca_cert.clone(),
            runtime_path: slurm
                .runtime_path
                .clone()
                .unwrap_or_else(|| self.runtime.path.clone()),
            device,
            threads: slurm.threads,
            work_dir: slurm
                .work_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/tmp")),
            queue_timeout: duration(
                &slurm.queue_timeout,
                "queue_timeout",
                Duration::from_secs(120),
            )?,
            join_timeout: duration(
                &slurm.join_timeout,
                "join_timeout",
                Duration::from_secs(300),
            )?,
            replace_before,
            warning,
            shared_model: slurm.shared_model.unwrap_or(false),
        })
    }

    fn scaling(
        &self,
        pools: &[Pool],
        replica_concurrency: usize,
    ) -> Result<ScalingPolicy, ConfigError> {
        let default = PolicySection {
            name: String::new(),
            spot_fallback: default_spot_fallback(),
            scale_up: ScaleUpSection::default(),
            scale_down: ScaleDownSection::default(),
            budget: None,
            predictive: false,
        };
        let p = self.policy.as_ref().unwrap_or(&default);
        one_of(
            "policy.spot_fallback",
            &p.spot_fallback,
            &["none", "on_demand"],
        )?;
        let up = &p.scale_up;
        let positive = |key: &str, v: Option<f64>| -> Result<Option<f64>, ConfigError> {
            match v {
                Some(x) if !(x.is_finite() && x > 0.0) => {
                    Err(bad(key, format!("{x} is not valid; use a number above 0")))
                }
                v => Ok(v),
            }
        };
        let queue_depth = positive("policy.scale_up.queue_depth", up.queue_depth)?;
        let p99 = positive("policy.scale_up.p99_latency_ms", up.p99_latency_ms)?;
        let utilization = positive("policy.scale_up.gpu_utilization", up.gpu_utilization)?;
        if utilization.is_some_and(|u| u > 1.0) {
            return Err(bad(
                "policy.scale_up.gpu_utilization",
                "use a fraction from 0 to 1, e.g. 0.8",
            ));
        }
        let budget = match &p.budget {
            None => None,
            Some(b) => {
                if !(b.max_hourly_usd.is_finite() && b.max_hourly_usd >= 0.0) {
                    return Err(bad(
                        "policy.budget.max_hourly_usd",
                        format!("{} is not an amount ≥ 0", b.max_hourly_usd),
                    ));
                }
                one_of(
                    "policy.budget.on_exhausted",
                    &b.on_exhausted,
                    &["queue", "reject"],
                )?;
                Some(Budget {
                    max_hourly_usd: b.max_hourly_usd,
                    reject_when_exhausted: b.on_exhausted == "reject",
                })
            }
        };
        if budget.is_some()
            && let Some(unpriced) = pools
                .iter()
                .find(|p| p.burst && p.price_per_gpu_hour.is_none())
        {
            return Err(bad(
                "pools",
                format!(
                    "burst pool {:?} has no price_per_gpu_hour, so burst spend cannot be held to the budget",
                    unpriced.name
                ),
            ));
        }
        let windows = Windows::checked(up, &p.scale_down.idle_for)?;
        Ok(ScalingPolicy {
            replicas_min: self.replicas.min,
            replicas_max: self.replicas.max,
            queue_depth,
            p99_latency_ms: p99,
            utilization,
            sustain: windows.sustain,
            stable_window: windows.stable,
            panic_window: windows.panic,
            panic_threshold: windows.panic_threshold,
            idle_for: windows.idle_for,
            min_warm: p.scale_down.min_warm_replicas,
            drain_timeout: duration(
                "policy.scale_down.drain_timeout",
                &p.scale_down.drain_timeout,
            )?,
            budget,
            spot_fallback: p.spot_fallback == "on_demand",
            predictive: p.predictive,
            replica_concurrency,
            queue_delay: Duration::from_micros(self.batching.max_queue_delay_us),
        })
    }
}

/// Checks `[policy.scale_up]`'s windows and panic threshold, and `idle_for`, as the router's
/// loader does: the provider checks a plan by it, so both refuse the same settings with the same
/// words.
pub fn check_scaling_windows(up: &ScaleUpSection, idle_for: &str) -> Result<(), ConfigError> {
    Windows::checked(up, idle_for).map(|_| ())
}

/// The scaling windows, checked against each other.
struct Windows {
    sustain: Duration,
    stable: Duration,
    panic: Duration,
    panic_threshold: f64,
    idle_for: Duration,
}

/// The longest stable window, panic window or `for`: an hour already averages away any burst.
const MAX_WINDOW: Duration = Duration::from_secs(3600);

impl Windows {
    fn checked(up: &ScaleUpSection, idle_for: &str) -> Result<Windows, ConfigError> {
        let window =
            |key: &str, text: Option<&str>, default: Duration| -> Result<Duration, ConfigError> {
                let Some(text) = text else { return Ok(default) };
                let d = duration(key, text)?;
                if d < Duration::from_secs(1) || d > MAX_WINDOW {
                    return Err(bad(
                        key,
                        format!("{text:?} is not valid; use a duration from 1s to 1h"),
                    ));
                }
                Ok(d)
            };
        let sustain = duration("policy.scale_up.for", &up.sustain)?;
        if sustain > MAX_WINDOW {
            return Err(bad(
                "policy.scale_up.for",
                format!("{:?} is not valid; use a duration up to 1h", up.sustain),
            ));
        }
        let stable = window(
            "policy.scale_up.stable_window",
            up.stable_window.as_deref(),
            crate::autoscaler::DEFAULT_STABLE_WINDOW,
        )?;
        let panic = window(
            "policy.scale_up.panic_window",
            up.panic_window.as_deref(),
            crate::autoscaler::DEFAULT_PANIC_WINDOW.min(stable),
        )?;
        if panic > stable {
            return Err(bad(
                "policy.scale_up.panic_window",
                format!(
                    "{} is longer than stable_window ({}); the panic window must be the shorter",
                    humantime::format_duration(panic),
                    humantime::format_duration(stable)
                ),
            ));
        }
        let panic_threshold = up
            .panic_threshold
            .unwrap_or(crate::autoscaler::DEFAULT_PANIC_THRESHOLD);
        if !(panic_threshold.is_finite() && (1.1..=100.0).contains(&panic_threshold)) {
            return Err(bad(
                "policy.scale_up.panic_threshold",
                format!(
                    "{panic_threshold} is not valid; use a multiple of the serving replicas from 1.1 to 100, e.g. 2"
                ),
            ));
        }
        let idle_for = duration("policy.scale_down.idle_for", idle_for)?;
        Ok(Windows {
            sustain,
            stable,
            panic,
            panic_threshold,
            idle_for,
        })
    }
}

/// The model-file reader the router uses, for the provider's plan to check a file the same way.
pub use gpucap_runtime::model::{ModelFile, read_model_file};
/// A model's inputs and outputs, as read from its file.
pub use gpucap_runtime::protocol::{Signature, TensorSpec};

/// Checks that `bytes`, read from `path`, are a model file the runtime serves in batches of up to
/// `max_batch_size` rows, and returns it; the error says what is wrong.
pub fn check_model(
    path: &std::path::Path,
    bytes: &[u8],
    max_batch_size: usize,
) -> Result<gpucap_runtime::model::ModelFile, String> {
    let model = gpucap_runtime::model::read_model_file(path, bytes)?;
    model.check_batch_size(max_batch_size)?;
    Ok(model)
}

/// SHA-256 of a config file's text, hex.
pub fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The longest duration a policy setting may have: a week, far beyond any useful `for`,
/// `idle_for` or `drain_timeout`, and far from where time arithmetic overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text).map_err(|_| {
        bad(
            key,
            format!("{text:?} is not a duration; use e.g. 30s, 1m or 1h30m"),
        )
    })?;
    if d > MAX_DURATION {
        return Err(bad(
            key,
            format!(
                "{text:?} is longer than {}, the longest allowed",
                humantime::format_duration(MAX_DURATION)
            ),
        ));
    }
    Ok(d)
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("{value:?} is not valid; use {}", allowed.join(" or ")),
        ))
    }
}

fn in_range(key: &str, value: usize, lo: u64, hi: u64) -> Result<(), ConfigError> {
    gpucap_runtime::config::in_range(key, value as u64, lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[endpoint]
name = "digits"

[model]
path = "/models/digits.safetensors"

[replicas]
min = 1
max = 3

[residency]
allowed_jurisdictions = ["EU"]

[policy]
name = "eu"
spot_fallback = "on_demand"
[policy.scale_up]
queue_depth = 4
for = "2s"
[policy.budget]
max_hourly_usd = 2.5
on_exhausted = "reject"

[[pools]]
name = "lab"
region = "lab-1"
jurisdiction = "EU"
gpus_max = 1
price_per_gpu_hour = 0.4
[pools.local]
devices = "cpu"

[[pools]]
name = "od"
role = "burst"
region = "eu-west-1"
jurisdiction = "EU"
capacity_type = "on_demand"
gpus_max = 2
price_per_gpu_hour = 3.0
[pools.local]

[[pools]]
name = "spot"
role = "burst"
region = "eu-west-1"
jurisdiction = "EU"
capacity_type = "spot"
gpus_max = 2
price_per_gpu_hour = 1.0
[pools.local]

[runtime]
path = "/bin/gpucap-runtime"

[state]
dir = "/tmp/state"
"#;

    fn load(text: &str) -> Result<Fabric, String> {
        let c: FabricConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate("d").map_err(|e| e.to_string())
    }

    #[test]
    fn pools_are_in_spill_order_base_first() {
        let f = load(BASE).unwrap();
        let names: Vec<_> = f.pools.iter().map(|p| (p.name.as_str(), p.burst)).collect();
        assert_eq!(names, [("lab", false), ("od", true), ("spot", true)]);
        // A base pool listed after burst pools still comes first.
        let moved = BASE.replacen("[[pools]]\nname = \"lab\"", "[[pools]]\nname = \"lab2\"", 1)
            + "\n[[pools]]\nname = \"lab\"\nregion = \"lab-1\"\njurisdiction = \"EU\"\ngpus_max = 1\n[pools.local]\n";
        let f = load(&moved).unwrap();
        let names: Vec<_> = f.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lab2", "lab", "od", "spot"]);
        assert_eq!(f.router_region, "lab-1");
        assert_eq!(f.scaling.sustain, Duration::from_secs(2));
        assert_eq!(f.scaling.idle_for, Duration::from_secs(600));
        assert_eq!(f.replica_concurrency, 64);
        assert!(f.scaling.spot_fallback);
        assert!(f.scaling.budget.unwrap().reject_when_exhausted);
        assert_eq!(
            f.pools[1].driver,
            Some(DriverConfig::Local {
                devices: "auto".into(),
                runtime_path: "/bin/gpucap-runtime".into()
            })
        );
    }

    #[test]
    fn the_file_round_trips() {
        let c: FabricConfig = toml::from_str(BASE).unwrap();
        let (text, d) = c.to_file_text().unwrap();
        let back: FabricConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        // The router reports the digest of the file it read: the one the writer gave.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fabric.toml");
        std::fs::write(&path, &text).unwrap();
        let (read, read_digest) = FabricConfig::from_file(&path).unwrap();
        assert_eq!(read, c);
        assert_eq!(read_digest, d);
        // A different config, a different digest.
        let mut other = c.clone();
        other.replicas.max += 1;
        assert_ne!(other.to_file_text().unwrap().1, d);
    }

    #[test]
    fn the_digest_is_sha256_in_hex() {
        assert_eq!(
            digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_known_region_cannot_be_relabelled_into_the_residency() {
        let text = BASE.replace(
            "name = \"od\"\nrole = \"burst\"\nregion = \"eu-west-1\"\njurisdiction = \"EU\"",
            "name = \"od\"\nrole = \"burst\"\nregion = \"us-east-1\"\njurisdiction = \"EU\"",
        );
        insta::assert_snapshot!(load(&text).unwrap_err(), @r#"pools[1].jurisdiction: region "us-east-1" (N. Virginia, US) is in jurisdiction "US", not "EU""#);
    }

    #[test]
    fn a_pool_outside_the_residency_is_refused_by_name() {
        let text = BASE.replace(
            "name = \"od\"\nrole = \"burst\"\nregion = \"eu-west-1\"\njurisdiction = \"EU\"",
            "name = \"od\"\nrole = \"burst\"\nregion = \"us-east-1\"\njurisdiction = \"US\"",
        );
        insta::assert_snapshot!(load(&text).unwrap_err(), @r#"pools[1]: pool "od" (region "us-east-1") is outside the endpoint's data residency: its jurisdiction "US" is not one of EU; the router refuses to load it"#);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let cases = [
            (
                "for = \"2s\"",
                "for = \"2 parsecs\"",
                "policy.scale_up.for: \"2 parsecs\" is not a duration; use e.g. 30s, 1m or 1h30m",
            ),
            (
                "on_exhausted = \"reject\"",
                "on_exhausted = \"drop\"",
                "policy.budget.on_exhausted: \"drop\" is not valid; use queue or reject",
            ),
            (
                "name = \"od\"\nrole = \"burst\"",
                "name = \"od\"\nrole = \"spare\"",
                "pools[1].role: \"spare\" is not valid; use base or burst",
            ),
            (
                "name = \"lab\"\n",
                "name = \"lab\"\nrole = \"burst\"\n",
                "pools: no base pool; give at least one pool role = \"base\" to carry the baseline",
            ),
            (
                "min = 1\nmax = 3",
                "min = 4\nmax = 3",
                "replicas.min: 4 is more than replicas.max (3)",
            ),
            (
                "queue_depth = 4",
                "queue_depth = -1",
                "policy.scale_up.queue_depth: -1 is not valid; use a number above 0",
            ),
            (
                "devices = \"cpu\"",
                "devices = \"tpu\"",
                "pools[0].local.devices: invalid device 'tpu'; valid: auto, cpu, cuda:N",
            ),
            (
                "max_hourly_usd = 2.5",
                "max_hourly_usd = 2.5\nmax_hourly = 3",
                "unknown field `max_hourly`",
            ),
            (
                "for = \"2s\"",
                "for = \"2s\"\npanic_window = \"2m\"",
                "policy.scale_up.panic_window: 2m is longer than stable_window (1m); the panic window must be the shorter",
            ),
            (
                "for = \"2s\"",
                "for = \"2s\"\nstable_window = \"3d\"",
                "policy.scale_up.stable_window: \"3d\" is not valid; use a duration from 1s to 1h",
            ),
            (
                "for = \"2s\"",
                "for = \"2s\"\npanic_window = \"0s\"",
                "policy.scale_up.panic_window: \"0s\" is not valid; use a duration from 1s to 1h",
            ),
            (
                "for = \"2s\"",
                "for = \"2h\"",
                "policy.scale_up.for: \"2h\" is not valid; use a duration up to 1h",
            ),
            (
                "for = \"2s\"",
                "for = \"2s\"\npanic_threshold = 0",
                "policy.scale_up.panic_threshold: 0 is not valid; use a multiple of the serving replicas from 1.1 to 100, e.g. 2",
            ),
        ];
        for (from, to, want) in cases {
            assert!(BASE.contains(from), "{from}");
            let err = load(&BASE.replace(from, to)).unwrap_err();
            assert!(err.contains(want), "{from} -> {to}: {err}");
        }
    }

    /// The `od` pool on a Slurm partition instead.
    const SLURM: &str = "[pools.slurm]\nrest_url = \"http://hpc:6820/\"\nuser = \"svc-gpucap\"\n\
                         partition = \"gpu\"\ngres = \"gpu:1\"\ntime_limit = \"24h\"\n\
                         join_url = \"https://router:7443/v1/join/digits\"\n\
                         join_token_file = \"/etc/gpucap/hpc.token\"\n";

    fn on_slurm(slurm: &str) -> String {
        BASE.replacen(
            "price_per_gpu_hour = 3.0\n[pools.local]\n",
            &format!("price_per_gpu_hour = 3.0\n{slurm}"),
            1,
        )
    }

    #[test]
    fn a_slurm_pool_is_read_with_its_defaults() {
        let f = load(&on_slurm(SLURM)).unwrap();
        let Some(DriverConfig::Slurm(c)) = &f.pools[1].driver else {
            panic!("{:?}", f.pools[1].driver);
        };
        assert_eq!(c.rest.rest_url, "http://hpc:6820");
        assert_eq!(c.rest.api_version, "v0.0.38");
        assert_eq!(c.time_limit_minutes, Some(24 * 60));
        assert_eq!(c.runtime_path, PathBuf::from("/bin/gpucap-runtime"));
        assert_eq!(c.device, "auto");
        assert_eq!(c.queue_timeout, Duration::from_secs(120));
        assert!(!c.join_token_minted, "the operator's token file is used");

        // Without a token file the router mints the pool's token, in the endpoint's directory.
        let f = load(&on_slurm(
            &SLURM.replace("join_token_file = \"/etc/gpucap/hpc.token\"\n", ""),
        ))
        .unwrap();
        let Some(DriverConfig::Slurm(c)) = &f.pools[1].driver else {
            panic!("{:?}", f.pools[1].driver);
        };
        assert!(c.join_token_minted);
        assert_eq!(c.join_token_file, f.state_dir.join("slurm-od.join-token"));
    }

    #[test]
    fn bad_slurm_settings_name_their_key() {
        let cases = [
            (
                "partition = \"gpu\"",
                "partition = \" \"",
                "pools[1].slurm.partition: is empty",
            ),
            (
                "rest_url = \"http://hpc:6820/\"",
                "rest_url = \"hpc:6820\"",
                "pools[1].slurm.rest_url: \"hpc:6820\" is not an http:// or https:// URL",
            ),
            (
                "time_limit = \"24h\"",
                "time_limit = \"30s\"",
                "pools[1].slurm.time_limit: is under a minute",
            ),
            (
                "time_limit = \"24h\"",
                "time_limit = \"a day\"",
                "pools[1].slurm.time_limit: \"a day\"",
            ),
            (
                "gres = \"gpu:1\"",
                "gres = \"gpu:1\"\ndevice = \"tpu\"",
                "pools[1].slurm.device: invalid device 'tpu'",
            ),
            (
                "partition = \"gpu\"",
                "partition = \"gpu\"\nnodes = 3",
                "unknown field `nodes`",
            ),
        ];
        for (from, to, want) in cases {
            assert!(SLURM.contains(from), "{from}");
            let err = load(&on_slurm(&SLURM.replace(from, to))).unwrap_err();
            assert!(err.contains(want), "{from} -> {to}: {err}");
        }
        let two = on_slurm(&format!("{SLURM}[pools.local]\n"));
        let err = load(&two).unwrap_err();
        assert!(
            err.contains(
                "pools[1]: has [pools.local] and [pools.slurm]; a pool has exactly one driver"
            ),
            "{err}"
        );
    }
}
