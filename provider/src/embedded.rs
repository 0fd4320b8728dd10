//! The embedded mode, the zero-setup default: with no `fabric` block the provider runs a
//! `gpucap-fabric daemon` on the host Terraform runs on (or reuses the one running there), with
//! the provider's `state_dir` as its state directory, and drives it through the same admin API
//! as a remote daemon. It listens on loopback only, serves every region (on one host, regions
//! are labels of local pools), keeps its token in `state_dir/daemon/` readable by its owner only,
//! and is stopped when a destroy leaves it with no endpoint (or exits by itself once it has hosted
//! none for a few seconds).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpucap_fabric::client::Client;
use gpucap_fabric::daemon::{ADDRESS_FILE, auth};
use gpucap_fabric::process::{self, ProcessRecord};

use crate::api::ProviderConfig;
use crate::diag::Diagnostic;
use crate::fabrics::FabricTarget;

/// How long the embedded daemon may take to answer after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the embedded daemon stays with no endpoint before it exits.
const IDLE_EXIT: &str = "10s";

/// The embedded daemon's own files: `state_dir/daemon/`.
pub fn daemon_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon")
}

fn failure(detail: impl std::fmt::Display) -> Diagnostic {
    Diagnostic::error(
        "Cannot start the embedded fabric daemon",
        format!(
            "{detail}\n\nWithout a fabric block the provider runs gpucap-fabric daemon on this host; set fabric_path to the gpucap-fabric binary, or add a fabric block for a daemon elsewhere."
        ),
    )
}

/// The token, made on first use and kept readable by its owner only.
fn token(dir: &Path) -> Result<String, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let token = auth::new_token()?;
    auth::write_token_hash(&dir.join("token.sha256"), &token)?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(token.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}

/// Writes the daemon's config for this provider configuration.
fn write_config(config: &ProviderConfig, dir: &Path) -> Result<PathBuf, String> {
    let mut table = toml::Table::new();
    let path_value = |p: &Path| toml::Value::String(p.display().to_string());
    table.insert("listen".into(), toml::Value::String("127.0.0.1:0".into()));
    table.insert("state_dir".into(), path_value(&config.state_dir));
    table.insert(
        "token_sha256_file".into(),
        path_value(&dir.join("token.sha256")),
    );
    table.insert("runtime_path".into(), path_value(&config.runtime_path));
    table.insert(
        "exit_when_idle".into(),
        toml::Value::String(IDLE_EXIT.into()),
    );
    let path = dir.join("daemon.toml");
    process::write_atomically(&path, &table.to_string())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// A client of the daemon whose address is recorded in `state_dir`, if it answers.
async fn answering(state_dir: &Path, token: &str) -> Option<Client> {
    let address = std::fs::read_to_string(state_dir.join(ADDRESS_FILE)).ok()?;
    let client = Client::new(address.trim(), token, None).ok()?;
    client.health().await.ok().map(|_| client)
}

/// The embedded daemon, started if none answers.
pub async fn target(config: &ProviderConfig) -> Result<FabricTarget, Diagnostic> {
    let dir = daemon_dir(&config.state_dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| failure(format!("cannot create {}: {e}", dir.display())))?;
    let token = token(&dir).map_err(failure)?;
    let target = |client: Client| FabricTarget {
        region: None,
        address: client.address().to_string(),
        token: token.clone(),
        ca_cert_file: None,
    };
    if let Some(client) = answering(&config.state_dir, &token).await {
        return Ok(target(client));
    }
    // One provider process starts it; another that raced it finds it answering.
    let _starting = start_lock(&dir).await.map_err(failure)?;
    if let Some(client) = answering(&config.state_dir, &token).await {
        return Ok(target(client));
    }
    let config_path = write_config(config, &dir).map_err(failure)?;
    let _ = std::fs::remove_file(config.state_dir.join(ADDRESS_FILE));
    let log = dir.join("daemon.log");
    let child = process::spawn(
        &config.fabric_path,
        &[
            "daemon".as_ref(),
            "--config".as_ref(),
            config_path.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
        ],
        &log,
    )
    .map_err(failure)?;
    let record = ProcessRecord::of(&child);
    // The daemon outlives this provider process; dropping the handle neither kills nor waits.
    drop(child);
    let _ = gpucap_fabric::store::write_json(&dir.join("process.json"), &record);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(client) = answering(&config.state_dir, &token).await {
            return Ok(target(client));
        }
        if !record.alive() {
            return Err(failure(format!(
                "the daemon exited:\n{}\n(log: {})",
                process::log_tail(&log),
                log.display()
            )));
        }
        if Instant::now() > deadline {
            let _ = record.stop(Duration::from_secs(5)).await;
            return Err(failure(format!(
                "the daemon did not answer within {}:\n{}",
                humantime::format_duration(START_TIMEOUT),
                process::log_tail(&log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the embedded daemon once it hosts no endpoint, so that a destroy leaves nothing running
/// on this host. Best effort: a daemon left behind exits by itself after `exit_when_idle`.
pub async fn stop_when_empty(config: &ProviderConfig, target: &FabricTarget) {
    let Ok(client) = target.client() else { return };
    let Ok(list) = client.list().await else {
        return;
    };
    if !list.endpoints.is_empty() {
        return;
    }
    let dir = daemon_dir(&config.state_dir);
    let _starting = start_lock(&dir).await;
    if let Ok(Some(record)) =
        gpucap_fabric::store::read_json::<ProcessRecord>(&dir.join("process.json"))
        && let Err(e) = record.stop(Duration::from_secs(10)).await
    {
        tracing::warn!(error = %e, "cannot stop the embedded fabric daemon");
    }
}

/// An exclusive lock on `dir/start.lock`, waited for without blocking the runtime.
async fn start_lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let path = dir.join("start.lock");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let file = gpucap_fabric::store::open_lock_file(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((_, e)) => return Err(format!("{}: {e}", path.display())),
        }
    }
}
