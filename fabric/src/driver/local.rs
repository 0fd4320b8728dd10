//! The `local` driver: a pool is this host's devices, a replica is one `gpucap-runtime` process
//! with its own device (`cuda:N`, or an equal share of the CPU threads) on a free port, recorded
//! under `state_dir/endpoints/NAME/replicas/ID/` so that a restarted router adopts it. Several local pools on one
//! host stand for several sites: their regions are labels.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gpucap_runtime::backend::{DeviceSpec, DeviceSpecError};
use gpucap_runtime::config::{LogFormat, RuntimeConfig};
use tokio_util::sync::CancellationToken;

use super::{Capacity, Driver, DriverError, ReplicaRecord, ReplicaSpec};
use crate::ledger::{Ledger, LedgerError};
use crate::process::{self, ProcessRecord};
use crate::store;

fn ledger_error(e: LedgerError) -> DriverError {
    DriverError(e.to_string())
}

/// How long a replica may take to load its model and become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub use gpucap_runtime::devices::DeviceInfo;

/// What this host can compute on: its CPU and every GPU the CUDA driver reports.
pub fn discover() -> Vec<DeviceInfo> {
    gpucap_runtime::devices::discover()
}

/// Checks a `devices` setting's syntax (without looking at the host).
pub fn check_devices(spec: &str) -> Result<(), DeviceSpecError> {
    spec.parse::<DeviceSpec>().map(|_| ())
}

/// Why a pool's `devices` setting names no device of this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevicesError {
    /// The setting does not parse.
    #[error(transparent)]
    Spec(#[from] DeviceSpecError),
    /// A GPU this host does not have.
    #[error("{id} is not on this host; it has: {available}")]
    NotOnHost {
        /// The device asked for.
        id: String,
        /// The devices this host has.
        available: String,
    },
}

/// The device ids a pool's `devices` setting resolves to on this host, or why it cannot.
pub fn devices_for(spec: &str) -> Result<Vec<String>, DevicesError> {
    let spec: DeviceSpec = spec.parse()?;
    // Hardware does not change while a process runs; every pool asks, so ask once.
    static FOUND: std::sync::OnceLock<Vec<DeviceInfo>> = std::sync::OnceLock::new();
    resolve(spec, FOUND.get_or_init(discover))
}

/// The device ids `spec` names among the devices `found` on a host.
fn resolve(spec: DeviceSpec, found: &[DeviceInfo]) -> Result<Vec<String>, DevicesError> {
    let gpus: Vec<String> = found
        .iter()
        .filter(|d| d.kind == "cuda")
        .map(|d| d.id.clone())
        .collect();
    match spec {
        DeviceSpec::Cpu => Ok(vec!["cpu".into()]),
        DeviceSpec::Auto if gpus.is_empty() => Ok(vec!["cpu".into()]),
        DeviceSpec::Auto => Ok(gpus),
        DeviceSpec::Cuda(ids) => ids
            .iter()
            .map(|i| {
                let id = format!("cuda:{i}");
                if gpus.contains(&id) {
                    Ok(id)
                } else {
                    let all: Vec<&str> = found.iter().map(|d| d.id.as_str()).collect();
                    Err(DevicesError::NotOnHost {
                        id,
                        available: all.join(", "),
                    })
                }
            })
            .collect(),
    }
}

/// An equal share of `cores` for each of `slots` replicas, at least one thread each.
fn threads_per_replica(cores: usize, slots: usize) -> usize {
    (cores / slots.max(1)).max(1)
}

/// An endpoint's place in the host's pool ledger.
#[derive(Debug, Clone)]
pub struct Seat {
    /// The host's ledger.
    pub ledger: Ledger,
    /// The endpoint.
    pub endpoint: String,
    /// Slots kept for it on this pool (its share of `replicas.min`).
    pub reserved: usize,
}

/// One local pool.
pub struct LocalDriver {
    pool: String,
    devices: Vec<String>,
    slots: usize,
    runtime: PathBuf,
    dir: PathBuf,
    seat: Seat,
}

impl LocalDriver {
    /// The driver for pool `pool` with `slots` replicas on `devices`, running `runtime`, keeping
    /// records under `replicas_dir` and taking slots through `seat`. The replicas recorded there
    /// that still run are entered in the ledger (they may predate it, or its file was lost).
    pub fn new(
        pool: &str,
        devices: &str,
        slots: usize,
        runtime: &Path,
        replicas_dir: &Path,
        seat: Seat,
    ) -> Result<LocalDriver, DriverError> {
        let devices = devices_for(devices).map_err(|e| DriverError(format!("pool {pool}: {e}")))?;
        let driver = LocalDriver {
            pool: pool.to_string(),
            devices,
            slots,
            runtime: runtime.to_path_buf(),
            dir: replicas_dir.to_path_buf(),
            seat,
        };
        let ledger = &driver.seat.ledger;
        ledger
            .reserve(pool, slots, &driver.seat.endpoint, driver.seat.reserved)
            .map_err(ledger_error)?;
        let running: Vec<(String, usize, ProcessRecord)> = driver
            .list()?
            .into_iter()
            .filter_map(|r| Some((r.id, r.slot, r.process?)))
            .collect();
        ledger
            .sync(
                pool,
                &driver.seat.endpoint,
                &running,
                &ProcessRecord::current(),
            )
            .map_err(ledger_error)?;
        Ok(driver)
    }

    fn release(&self, replica: &str) {
        if let Err(e) = self
            .seat
            .ledger
            .release(&self.pool, &self.seat.endpoint, replica)
        {
            tracing::warn!(error = %e, "cannot give a slot back (it is reclaimed once the replica is gone)");
        }
    }

    /// CPU threads per replica: an equal share of this host's cores.
    fn cpu_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        threads_per_replica(cores, self.slots)
    }

    /// The device of `slot`: GPUs in turn, else the CPU.
    fn device(&self, slot: usize) -> String {
        if self.devices.iter().all(|d| d == "cpu") {
            "cpu".into()
        } else {
            self.devices[slot % self.devices.len()].clone()
        }
    }

    /// Writes the runtime config of a replica in `dir`; its path.
    fn write_runtime_config(
        &self,
        spec: &ReplicaSpec,
        device: &str,
        dir: &Path,
    ) -> Result<PathBuf, DriverError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| DriverError(format!("cannot create {}: {e}", dir.display())))?;
        let config = self.runtime_config(spec, device, dir);
        let toml = toml::to_string(&config)
            .map_err(|e| DriverError(format!("cannot write the runtime config: {e}")))?;
        let config_path = dir.join("runtime.toml");
        std::fs::write(&config_path, toml)
            .map_err(|e| DriverError(format!("cannot write {}: {e}", config_path.display())))?;
        Ok(config_path)
    }

    fn runtime_config(&self, spec: &ReplicaSpec, device: &str, dir: &Path) -> RuntimeConfig {
        let mut c = RuntimeConfig::default();
        c.model.path = Some(spec.model_path.clone());
        c.model.name = Some(spec.model_name.clone());
        c.model.version = spec.model_version.clone();
        c.server.listen = "127.0.0.1:0".into();
        c.server.max_body_bytes = spec.max_body_bytes;
        c.server.address_file = Some(dir.join("address"));
        c.batching = spec.batching;
        c.compute.device = device.to_string();
        if device == "cpu" {
            c.compute.threads = self.cpu_threads();
        }
        c.log.format = LogFormat::Json;
        c
    }
}

/// A replica's directory.
fn replica_dir(replicas_dir: &Path, id: &str) -> PathBuf {
    replicas_dir.join(id)
}

/// Every replica record under `replicas_dir`, of any pool; unreadable ones are reported.
pub fn records(replicas_dir: &Path) -> Vec<Result<ReplicaRecord, store::StoreError>> {
    let Ok(entries) = std::fs::read_dir(replicas_dir) else {
        return Vec::new();
    };
    let mut out: Vec<Result<ReplicaRecord, store::StoreError>> = entries
        .flatten()
        .filter_map(|e| store::read_json(&e.path().join("replica.json")).transpose())
        .collect();
    out.sort_by(|a, b| match (a, b) {
        (Ok(a), Ok(b)) => a.id.cmp(&b.id),
        _ => std::cmp::Ordering::Equal,
    });
    out
}

/// Stops a recorded replica whatever pool it belongs to and removes its record.
pub async fn stop_record(
    replicas_dir: &Path,
    r: &ReplicaRecord,
    drain: Duration,
) -> Result<(), DriverError> {
    if let Some(p) = &r.process {
        p.stop(drain).await?;
    }
    let dir = replica_dir(replicas_dir, &r.id);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DriverError(format!(
            "replica {} stopped, but {} remains: {e}",
            r.id,
            dir.display()
        ))),
        _ => Ok(()),
    }
}

#[async_trait]
impl Driver for LocalDriver {
    fn capacity(&self) -> Capacity {
        // What the ledger leaves this endpoint; none while the ledger cannot be read, so that
        // nothing starts on a pool whose slots nobody can count.
        let slots = match self
            .seat
            .ledger
            .capacity_for(&self.pool, &self.seat.endpoint)
        {
            Ok(n) => n.min(self.slots),
            Err(e) => {
                tracing::warn!(pool = %self.pool, error = %e, "cannot read the pool ledger");
                0
            }
        };
        Capacity {
            slots,
            devices: self.devices.clone(),
        }
    }

    async fn start(
        &self,
        spec: &ReplicaSpec,
        cancel: &CancellationToken,
    ) -> Result<ReplicaRecord, DriverError> {
        let dir = replica_dir(&self.dir, &spec.id);
        let log = dir.join("runtime.log");
        let remove_dir = || {
            let _ = std::fs::remove_dir_all(&dir);
        };
        let cleanup = || {
            remove_dir();
            self.release(&spec.id);
        };
        let (mut child, mut replica) = {
            // The ledger hands out slots under its lock, so starts running at once, from this
            // router or another on the host, never share a slot (and its device).
            let slot = self
                .seat
                .ledger
                .claim(
                    &self.pool,
                    &self.seat.endpoint,
                    &spec.id,
                    ProcessRecord::current(),
                )
                .map_err(ledger_error)?;
            let device = self.device(slot);
            // A directory left by an interrupted start must not lend its old address file.
            remove_dir();
            let config_path = self
                .write_runtime_config(spec, &device, &dir)
                .inspect_err(|_| cleanup())?;
            let child = match process::spawn(
                &self.runtime,
                &[
                    "serve".as_ref(),
                    "--config".as_ref(),
                    config_path.as_os_str(),
                ],
                &log,
            ) {
                Ok(c) => c,
                Err(e) => {
                    cleanup();
                    return Err(e.into());
                }
            };
            if let Err(e) = self.seat.ledger.bind(
                &self.pool,
                &self.seat.endpoint,
                &spec.id,
                ProcessRecord::of(&child),
            ) {
                tracing::warn!(error = %e, "cannot enter a replica's process in the pool ledger");
            }
            // Recorded before it is ready (without an address): if the router dies while it
            // starts, whoever comes next finds the process and stops it.
            let replica = ReplicaRecord {
                id: spec.id.clone(),
                pool: self.pool.clone(),
                address: String::new(),
                slot,
                device,
                process: Some(ProcessRecord::of(&child)),
                started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                digest: spec.digest.clone(),
            };
            if let Err(e) = store::write_json(&dir.join("replica.json"), &replica) {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                cleanup();
                return Err(DriverError(format!(
                    "cannot record replica {} in {}: {e}",
                    spec.id,
                    dir.display()
                )));
            }
            (child, replica)
        };
        let failed = |why: String, child: &mut std::process::Child| {
            let _ = child.kill();
            let _ = child.wait();
            let tail = process::log_tail(&log);
            cleanup();
            DriverError(format!(
                "replica {} on pool {}: {why}\n{tail}",
                spec.id, self.pool
            ))
        };
        replica.address = match wait_ready(&mut child, &dir, cancel).await {
            Ok(a) => a,
            Err(why) => return Err(failed(why, &mut child)),
        };
        if let Err(e) = store::write_json(&dir.join("replica.json"), &replica) {
            return Err(failed(format!("cannot record it: {e}"), &mut child));
        }
        // The process outlives this handle: dropping a `Child` neither kills nor waits for it,
        // and `ProcessRecord::alive` reaps it once it exits.
        drop(child);
        Ok(replica)
    }

    async fn stop(&self, replica: &ReplicaRecord, drain: Duration) -> Result<(), DriverError> {
        stop_record(&self.dir, replica, drain).await?;
        self.release(&replica.id);
        Ok(())
    }

    fn list(&self) -> Result<Vec<ReplicaRecord>, DriverError> {
        let mut out = Vec::new();
        for r in records(&self.dir) {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable replica record");
                    continue;
                }
            };
            if r.pool != self.pool {
                continue;
            }
            if self.alive(&r) {
                out.push(r);
            } else {
                let _ = std::fs::remove_dir_all(replica_dir(&self.dir, &r.id));
            }
        }
        Ok(out)
    }

    fn alive(&self, replica: &ReplicaRecord) -> bool {
        replica.process.as_ref().is_some_and(ProcessRecord::alive)
    }
}

/// Waits until the runtime wrote its address and answers ready; the address.
async fn wait_ready(
    child: &mut std::process::Child,
    dir: &Path,
    cancel: &CancellationToken,
) -> Result<String, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    // One client for every start: building one costs milliseconds, on the path of a scale from
    // zero.
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let http = HTTP.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default()
    });
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the runtime exited during start ({status})"));
        }
        if cancel.is_cancelled() {
            return Err("the start was cancelled".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not ready within {}",
                humantime::format_duration(START_TIMEOUT)
            ));
        }
        if let Ok(addr) = std::fs::read_to_string(dir.join("address")) {
            let ready = http
                .get(format!("http://{addr}/v2/health/ready"))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(addr);
            }
        }
        // Short: time to first answer after a scale from zero includes this wait.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(dir: &tempfile::TempDir) -> Seat {
        Seat {
            ledger: Ledger::new(&dir.path().join("ledger")),
            endpoint: "e".into(),
            reserved: 0,
        }
    }

    fn host(gpus: &[&str]) -> Vec<DeviceInfo> {
        let device = |id: &str, kind: &str| DeviceInfo {
            id: id.into(),
            kind: kind.into(),
            name: format!("{kind} device"),
            memory_mib: 1024,
            cores: 1,
        };
        std::iter::once(device("cpu", "cpu"))
            .chain(gpus.iter().map(|g| device(g, "cuda")))
            .collect()
    }

    fn resolved(spec: &str, found: &[DeviceInfo]) -> Result<Vec<String>, String> {
        resolve(spec.parse().unwrap(), found).map_err(|e| e.to_string())
    }

    #[test]
    fn device_lists_resolve_against_the_hosts_devices() {
        let cpu_only = host(&[]);
        let two_gpus = host(&["cuda:0", "cuda:1"]);
        assert_eq!(resolved("auto", &cpu_only).unwrap(), ["cpu"]);
        assert_eq!(resolved("auto", &two_gpus).unwrap(), ["cuda:0", "cuda:1"]);
        assert_eq!(resolved("cpu", &two_gpus).unwrap(), ["cpu"]);
        assert_eq!(resolved("cuda:1", &two_gpus).unwrap(), ["cuda:1"]);
        assert_eq!(
            resolved("cuda:0,cuda:2", &two_gpus).unwrap_err(),
            "cuda:2 is not on this host; it has: cpu, cuda:0, cuda:1"
        );
        assert_eq!(
            resolved("cuda:0", &cpu_only).unwrap_err(),
            "cuda:0 is not on this host; it has: cpu"
        );
        // Through this host's own discovery: the setting's syntax is checked before the host.
        assert_eq!(devices_for("cpu").unwrap(), ["cpu"]);
        assert!(
            devices_for("tpu")
                .unwrap_err()
                .to_string()
                .contains("invalid device 'tpu'")
        );
    }

    #[test]
    fn cpu_replicas_share_the_cores_and_gpus_go_in_turn() {
        assert_eq!(threads_per_replica(2, 2), 1);
        assert_eq!(threads_per_replica(16, 3), 5);
        assert_eq!(threads_per_replica(16, 1), 16);
        assert_eq!(threads_per_replica(2, 4), 1, "never less than one thread");
        assert_eq!(threads_per_replica(8, 0), 8, "no slots counts as one");
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDriver::new("lab", "cpu", 2, Path::new("rt"), dir.path(), seat(&dir)).unwrap();
        assert_eq!(d.device(1), "cpu");
        let gpus = LocalDriver {
            devices: vec!["cuda:0".into(), "cuda:1".into()],
            ..d
        };
        assert_eq!(
            [gpus.device(0), gpus.device(1), gpus.device(2)],
            ["cuda:0", "cuda:1", "cuda:0"]
        );
    }

    #[tokio::test]
    async fn a_runtime_that_cannot_start_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let d = LocalDriver::new(
            "lab",
            "cpu",
            1,
            Path::new("/bin/false"),
            dir.path(),
            seat(&dir),
        )
        .unwrap();
        let spec = ReplicaSpec {
            id: "lab-1".into(),
            model_path: "/nonexistent.safetensors".into(),
            model_name: "m".into(),
            model_version: "1".into(),
            batching: Default::default(),
            max_body_bytes: 1 << 20,
            digest: "d".into(),
        };
        let err = d.start(&spec, &CancellationToken::new()).await.unwrap_err();
        assert!(err.0.contains("the runtime exited during start"), "{err}");
        assert!(!dir.path().join("lab-1").exists());
        assert!(d.list().unwrap().is_empty());
        assert_eq!(d.capacity().slots, 1, "the failed start gave its slot back");
    }
}
