//! `gpucap-fabric daemon`: the long-running fabric of one site or gateway host. It hosts any
//! number of endpoints, each as its own router process ([`host`]), keeps one pool ledger for all
//! of them ([`crate::ledger`]), and is driven through a versioned admin API ([`api`]) over HTTPS
//! with a bearer token ([`auth`], [`crate::tls`]); replicas on other machines join endpoints' routers through
//! the same listener ([`join`]). Serving never lives where `terraform apply` happens
//! to run.
//!
//! Signals: SIGHUP re-reads the token hash and the TLS files; SIGTERM or SIGINT drains every
//! endpoint and exits (their records stay, so the next start brings them back); SIGUSR2 exits
//! at once and leaves every endpoint serving, for an upgrade: the new daemon adopts them.

pub mod api;
pub mod auth;
pub mod config;
pub mod host;
pub mod join;
pub mod keys;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use self::api::Api;
use self::host::{Host, Site};
use crate::tls;

/// The file in the state directory that holds the admin API's base URL once it listens.
pub const ADDRESS_FILE: &str = "daemon.address";

/// How often supervision looks for routers that are not running.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every endpoint was drained (SIGTERM or SIGINT).
    Drained,
    /// The endpoints were left serving (SIGUSR2).
    LeftServing,
}

/// The `gpucap-runtime` binary beside `fabric_bin`.
fn runtime_beside(fabric_bin: &Path) -> PathBuf {
    fabric_bin.with_file_name("gpucap-runtime")
}

/// Runs the daemon from the config file at `path` until a signal ends it.
pub async fn run(path: &Path) -> Result<Exit, String> {
    let checked = config::load(path)?;
    let token_hash = auth::read_token_hash(&checked.config.token_sha256_file)?;
    let rustls = checked
        .config
        .tls
        .as_ref()
        .map(tls::server_config)
        .transpose()?;
    let fabric_bin =
        std::env::current_exe().map_err(|e| format!("cannot find this binary's path: {e}"))?;
    let site = Site {
        state_dir: checked.config.state_dir.clone(),
        region: checked.config.region.clone(),
        jurisdiction: checked.jurisdiction.clone(),
        runtime_bin: checked
            .config
            .runtime_path
            .clone()
            .unwrap_or_else(|| runtime_beside(&fabric_bin)),
        fabric_bin,
    };
    let _owner = lock_state_dir(&site.state_dir)?;
    let host = Host::open(site)?;
    let stop = CancellationToken::new();
    let api = Arc::new(Api {
        host,
        token_hash: RwLock::new(token_hash),
        stop: stop.clone(),
        last_call: std::sync::Mutex::new(std::time::Instant::now()),
        in_flight: std::sync::atomic::AtomicUsize::new(0),
    });
    let listener = std::net::TcpListener::bind(checked.listen)
        .map_err(|e| format!("listen: cannot listen on {}: {e}", checked.listen))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listen: {e}"))?;
    let local: SocketAddr = listener.local_addr().map_err(|e| format!("listen: {e}"))?;
    let handle = axum_server::Handle::<SocketAddr>::new();
    let app = api::routes(api.clone()).into_make_service();
    let scheme = if rustls.is_some() { "https" } else { "http" };
    let tls_config = rustls.map(axum_server::tls_rustls::RustlsConfig::from_config);
    let server = match &tls_config {
        Some(tls) => {
            // No Nagle: a joined replica's HTTP/2 frames pass through here, and a small frame
            // held for an ACK costs a delayed-ACK timeout (40 ms) per request.
            let server = axum_server::from_tcp_rustls(listener, tls.clone())
                .map_err(|e| format!("listen: {e}"))?
                .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor::new()))
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .map_err(|e| format!("listen: {e}"))?
                .acceptor(axum_server::accept::NoDelayAcceptor::new())
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    let base = format!("{scheme}://{local}");
    let address_file = checked.config.state_dir.join(ADDRESS_FILE);
    crate::process::write_atomically(&address_file, &base)
        .map_err(|e| format!("cannot write {}: {e}", address_file.display()))?;
    tracing::info!(
        address = %base,
        region = checked.config.region.as_deref().unwrap_or("every region"),
        jurisdiction = checked.jurisdiction.as_deref().unwrap_or("-"),
        endpoints = api.host.names().len(),
        "daemon listening"
    );

    let idle = CancellationToken::new();
    let supervisor = {
        let api = api.clone();
        let stop = stop.clone();
        let idle = idle.clone();
        let idle_limit = checked.exit_when_idle;
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                api.host.supervise(&stop);
                if let Some(limit) = idle_limit
                    && api.host.names().is_empty()
                    && api.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
                    && api
                        .last_call
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .elapsed()
                        >= limit
                {
                    idle.cancel();
                }
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(SUPERVISE_EVERY) => {}
                }
            }
        })
    };

    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut leave = signal(SignalKind::user_defined2()).map_err(|e| e.to_string())?;
    let exit = loop {
        tokio::select! {
            _ = hangup.recv() => reload(path, &api, tls_config.as_ref()),
            _ = terminate.recv() => break Exit::Drained,
            _ = interrupt.recv() => break Exit::Drained,
            _ = leave.recv() => break Exit::LeftServing,
            () = idle.cancelled() => {
                tracing::info!("no endpoint and no call for exit_when_idle; exiting");
                break Exit::Drained;
            }
        }
    };
    stop.cancel();
    let _ = supervisor.await;
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
    let _ = server.await;
    if exit == Exit::Drained {
        tracing::info!("draining every endpoint");
        api.host.drain_all().await;
        tracing::info!("every endpoint drained; exiting");
    } else {
        tracing::info!("exiting; every endpoint keeps serving for the next daemon to adopt");
    }
    let _ = std::fs::remove_file(&address_file);
    Ok(exit)
}

/// Holds an exclusive lock on the state directory for as long as the daemon runs: two daemons on
/// one state directory would each take the other's pool slots and restart the other's routers.
fn lock_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("state_dir {}: {e}", dir.display()))?;
    let path = dir.join("daemon.lock");
    let file = crate::store::open_lock_file(&path)
        .map_err(|e| format!("state_dir: cannot open {}: {e}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        format!(
            "state_dir {}: another gpucap-fabric daemon runs on it ({e}); one daemon per state directory",
            dir.display()
        )
    })
}

/// SIGHUP: the token hash and TLS files are read again; a bad one is refused and the running
/// one kept. Other settings need a restart.
fn reload(path: &Path, api: &Api, tls: Option<&axum_server::tls_rustls::RustlsConfig>) {
    let checked = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused; keeping the running config");
            return;
        }
    };
    match auth::read_token_hash(&checked.config.token_sha256_file) {
        Ok(hash) => *api.token_hash.write().unwrap_or_else(|p| p.into_inner()) = hash,
        Err(e) => tracing::error!(error = %e, "token not reloaded; keeping the running one"),
    }
    match (tls, &checked.config.tls) {
        (Some(running), Some(section)) => match tls::server_config(section) {
            Ok(c) => running.reload_from_config(c),
            Err(e) => {
                tracing::error!(error = %e, "TLS not reloaded; keeping the running certificates")
            }
        },
        (None, None) => {}
        _ => tracing::warn!("turning TLS on or off needs a restart"),
    }
    tracing::info!("daemon config reloaded");
}
