//! The `local` driver: capacity is this host's devices, and an endpoint is a `gpucap-runtime` process
//! started detached (so it outlives `terraform`), recorded in `state_dir` with its pid, process start
//! time and address, checked by pid and health endpoint, and stopped with a drain.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpucap_runtime::backend::DeviceSpec;
use gpucap_runtime::config::RuntimeConfig;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::store;

/// The device ids a pool's `devices` setting resolves to on this host, or why it cannot.
pub fn devices_for(spec: &str) -> Result<Vec<String>, String> {
    let spec: DeviceSpec = spec.parse()?;
    // Hardware does not change within one Terraform operation; every pool plan asks, so ask once.
    static FOUND: std::sync::OnceLock<Vec<gpucap_runtime::devices::DeviceInfo>> =
        std::sync::OnceLock::new();
    let found = FOUND.get_or_init(gpucap_runtime::devices::discover);
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
                    Err(format!(
                        "{id} is not on this host; it has: {}",
                        all.join(", ")
                    ))
                }
            })
            .collect(),
    }
}

/// A running (or once running) runtime process, as recorded in `state_dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Process id.
    pub pid: i32,
    /// The process's start time in clock ticks since boot, so a recycled pid is not mistaken for it.
    pub start_ticks: u64,
    /// `host:port` it listens on.
    pub address: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// Where an endpoint's files live.
pub struct EndpointDir(pub PathBuf);

impl EndpointDir {
    /// `state_dir/endpoints/NAME`.
    pub fn new(state_dir: &Path, name: &str) -> EndpointDir {
        EndpointDir(store::kind_dir(state_dir, "endpoints").join(name))
    }
    fn config(&self) -> PathBuf {
        self.0.join("runtime.toml")
    }
    fn address(&self) -> PathBuf {
        self.0.join("address")
    }
    /// The runtime's log.
    pub fn log(&self) -> PathBuf {
        self.0.join("runtime.log")
    }
    fn deployment(&self) -> PathBuf {
        self.0.join("deployment.json")
    }
    /// The endpoint's last applied state.
    pub fn state(&self) -> PathBuf {
        self.0.join("state.json")
    }

    /// The recorded deployment, if any.
    pub fn read_deployment(&self) -> Result<Option<Deployment>, String> {
        store::read_json(&self.deployment())
    }

    /// Removes the directory and everything in it.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// How long a runtime may take to load its model and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts the runtime with `config`, waits until it is ready and records it. On any failure nothing
/// is left running and no deployment is recorded.
pub async fn start(
    runtime: &Path,
    dir: &EndpointDir,
    mut config: RuntimeConfig,
    cancel: &CancellationToken,
) -> Result<Deployment, String> {
    std::fs::create_dir_all(&dir.0)
        .map_err(|e| format!("cannot create {}: {e}", dir.0.display()))?;
    let _ = std::fs::remove_file(dir.address());
    config.server.address_file = Some(dir.address());
    let toml =
        toml::to_string(&config).map_err(|e| format!("cannot write the runtime config: {e}"))?;
    std::fs::write(dir.config(), toml)
        .map_err(|e| format!("cannot write {}: {e}", dir.config().display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.log())
        .map_err(|e| format!("cannot open {}: {e}", dir.log().display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new(runtime)
        .arg("serve")
        .arg("--config")
        .arg(dir.config())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: Ctrl-C in the terminal running terraform must not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the runtime {}: {e}; set runtime_path in the provider block to the gpucap-runtime binary",
                runtime.display()
            )
        })?;
    let pid = child.id() as i32;
    let deadline = Instant::now() + START_TIMEOUT;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let address = loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the runtime exited during start ({status}):\n{}",
                log_tail(&dir.log())
            ));
        }
        if cancel.is_cancelled() || Instant::now() > deadline {
            let why = if cancel.is_cancelled() {
                "the operation was cancelled"
            } else {
                "it was not ready within 60 s"
            };
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "stopped the runtime: {why}:\n{}",
                log_tail(&dir.log())
            ));
        }
        if let Ok(addr) = std::fs::read_to_string(dir.address()) {
            let ready = http
                .get(format!("http://{addr}/v2/health/ready"))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break addr;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deployment = Deployment {
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
        address,
        started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    if let Err(e) = store::write_json(&dir.deployment(), &deployment) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "cannot record the deployment in {}: {e}",
            dir.0.display()
        ));
    }
    Ok(deployment)
}

/// What a recorded deployment is doing now.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// Running and answering ready.
    Ready,
    /// Running but not ready (loading or draining).
    NotReady,
    /// Not running (exited, killed, or the pid now belongs to another process).
    Gone,
}

/// Checks the process and its health endpoint.
pub async fn health(d: &Deployment) -> Health {
    if !alive(d) {
        return Health::Gone;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(_) => return Health::NotReady,
    };
    match client
        .get(format!("http://{}/v2/health/ready", d.address))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => Health::Ready,
        _ => Health::NotReady,
    }
}

/// Whether the recorded process is still the one we started and not a zombie.
pub fn alive(d: &Deployment) -> bool {
    // Reap it if it is our own child that has exited (a restart within one apply).
    let _ = nix::sys::wait::waitpid(
        Pid::from_raw(d.pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
    match proc_stat(d.pid) {
        Some((state, ticks)) => state != 'Z' && (d.start_ticks == 0 || ticks == d.start_ticks),
        None => false,
    }
}

/// Stops a deployment: SIGTERM (the runtime drains: it answers what it accepted), then SIGKILL if it
/// is still running after `drain`.
pub async fn stop(d: &Deployment, drain: Duration) -> Result<(), String> {
    if !alive(d) {
        return Ok(());
    }
    let pid = Pid::from_raw(d.pid);
    kill(pid, Signal::SIGTERM)
        .map_err(|e| format!("cannot signal the runtime (pid {}): {e}", d.pid))?;
    let deadline = Instant::now() + drain;
    while Instant::now() < deadline {
        if !alive(d) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(pid = d.pid, "runtime did not drain in time; killing it");
    let _ = kill(pid, Signal::SIGKILL);
    for _ in 0..100 {
        if !alive(d) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "the runtime (pid {}) did not exit after SIGKILL",
        d.pid
    ))
}

/// `(state, start time)` from `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields after it are plain.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((state, ticks))
}

fn start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

/// The last lines of the runtime's log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_resolve_against_this_host() {
        assert_eq!(devices_for("cpu").unwrap(), ["cpu"]);
        assert!(!devices_for("auto").unwrap().is_empty());
        assert!(devices_for("tpu").unwrap_err().contains("invalid device"));
    }

    #[test]
    fn own_process_is_alive_and_a_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let ticks = start_ticks(me).unwrap();
        let d = Deployment {
            pid: me,
            start_ticks: ticks,
            address: String::new(),
            started_at: String::new(),
        };
        assert!(alive(&d));
        assert!(!alive(&Deployment {
            start_ticks: ticks + 1,
            ..d.clone()
        }));
    }
}
