//! The embedded mode, the zero-setup default: with no `fabric` block the provider runs a
//! `gpucap-fabric daemon` on the host Terraform runs on (or reuses the one running there), with
//! the provider's `state_dir` as its state directory, and drives it through the same admin API
//! as a remote daemon. It listens on loopback only, serves every region (on one host, regions
//! are labels of local pools), keeps its token in `state_dir/daemon/` readable by its owner only,
//! and exits by itself two seconds after it last hosted an endpoint and answered a call.

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
const IDLE_EXIT: &str = "2s";

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

/// The token, if one was made.
fn existing_token(dir: &Path) -> Option<String> {
    let t = std::fs::read_to_string(dir.join("token")).ok()?;
    Some(t.trim().to_string()).filter(|t| !t.is_empty())
}

/// The token, made on first use (under the start lock) and kept readable by its owner only.
fn token(dir: &Path) -> Result<String, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(t) = existing_token(dir) {
        return Ok(t);
    }
    let path = dir.join("token");
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
    let target = |client: Client, token: &str| FabricTarget {
        region: None,
        address: client.address().to_string(),
        token: token.to_string(),
        ca_cert_file: None,
    };
    if let Some(token) = existing_token(&dir)
        && let Some(client) = answering(&config.state_dir, &token).await
    {
        return Ok(target(client, &token));
    }
    // One provider process makes the token and starts the daemon; another that raced it waits
    // here and then finds it answering.
    let _starting = start_lock(&dir).await.map_err(failure)?;
    let token = token(&dir).map_err(failure)?;
    if let Some(client) = answering(&config.state_dir, &token).await {
        return Ok(target(client, &token));
    }
    let recorded: Option<ProcessRecord> =
        gpucap_fabric::store::read_json(&dir.join("process.json")).unwrap_or_default();
    let record = match recorded.filter(ProcessRecord::alive) {
        // A daemon that runs but was slow to answer keeps its address: a second one could not
        // take the state directory anyway.
        Some(running) => running,
        None => spawn(config, &dir)?,
    };
    let log = dir.join("daemon.log");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(client) = answering(&config.state_dir, &token).await {
            return Ok(target(client, &token));
        }
        if !record.alive() {
            return Err(failure(format!(
                "the daemon exited:\n{}\n(log: {})",
                process::log_tail(&log),
                log.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(failure(format!(
                "the daemon (process {}) did not answer within {}:\n{}",
                record.pid,
                humantime::format_duration(START_TIMEOUT),
                process::log_tail(&log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the daemon, detached; its process, recorded in `dir/process.json`.
fn spawn(config: &ProviderConfig, dir: &Path) -> Result<ProcessRecord, Diagnostic> {
    let config_path = write_config(config, dir).map_err(failure)?;
    let _ = std::fs::remove_file(config.state_dir.join(ADDRESS_FILE));
    let child = process::spawn(
        &config.fabric_path,
        &[
            "daemon".as_ref(),
            "--config".as_ref(),
            config_path.as_os_str(),
            "--log-format".as_ref(),
            "json".as_ref(),
        ],
        &dir.join("daemon.log"),
    )
    .map_err(failure)?;
    let record = ProcessRecord::of(&child);
    // The daemon outlives this provider process; dropping the handle neither kills nor waits.
    drop(child);
    let _ = gpucap_fabric::store::write_json(&dir.join("process.json"), &record);
    Ok(record)
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
