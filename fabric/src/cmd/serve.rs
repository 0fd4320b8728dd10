//! Wiring for `gpucap-fabric serve`: read and check the config, bind, adopt the replicas recorded
//! in `state_dir`, run the router and the control loop. SIGHUP reloads the config file, the API
//! keys and the TLS certificates (a bad one is refused and the running one kept; connections
//! stay up); SIGTERM or SIGINT drains: no new connections, every accepted request answered, then
//! every replica drained and stopped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::workers::Workers;
use axum::serve::ListenerExt as _;
use axum_server::tls_rustls::RustlsConfig;
use gpucap_fabric::config::{Fabric, FabricConfig};
use gpucap_fabric::controller::{Controller, Shared};
use gpucap_fabric::fleet::Fleet;
use gpucap_fabric::front::Front;
use gpucap_fabric::gateway::keys::{Key, KeysFile};
use gpucap_fabric::gateway::{Gateway, Setting};
use gpucap_fabric::join::JoinHub;
use gpucap_fabric::metrics::FabricMetrics;
use gpucap_fabric::router::{RouterState, Settings, operator_router};
use gpucap_fabric::signals::LatencyWindow;

/// A config file read, checked and ready to run.
pub struct Loaded {
    /// The validated config.
    pub fabric: Fabric,
    /// What the routes need.
    pub settings: Settings,
    /// Digest of everything replicas are started with.
    pub runtime_digest: String,
    /// The API keys, read from `auth.keys_file`.
    pub keys: Vec<Key>,
    /// The listener's TLS, read from `[tls]`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Reads `path`, validates it, and reads the model's signature.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let (config, digest) = FabricConfig::from_file(path).map_err(|e| e.to_string())?;
    let fabric = config
        .validate(&digest)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    let bytes = std::fs::read(&fabric.model_path)
        .map_err(|e| format!("model.path {}: {e}", fabric.model_path.display()))?;
    let model = gpucap_fabric::config::check_model(
        &fabric.model_path,
        &bytes,
        fabric.batching.max_batch_size,
    )
    .map_err(|e| format!("model.path {}: {e}", fabric.model_path.display()))?;
    let keys = if fabric.auth_required {
        KeysFile::read(&fabric.keys_file)?
    } else {
        Vec::new()
    };
    let tls = fabric
        .tls
        .as_ref()
        .map(gpucap_fabric::tls::server_config)
        .transpose()?;
    let mut hash = Sha256::new();
    hash.update(Sha256::digest(&bytes));
    hash.update(fabric.model_version.as_bytes());
    hash.update(
        toml::to_string(&fabric.batching)
            .unwrap_or_default()
            .as_bytes(),
    );
    hash.update(fabric.max_body_bytes.to_le_bytes());
    let settings = Settings {
        name: fabric.name.clone(),
        version: fabric.model_version.clone(),
        signature: model.signature(),
        max_body_bytes: fabric.max_body_bytes,
        request_timeout: fabric.request_timeout,
        scales_to_zero: fabric.scaling.replicas_min == 0,
    };
    Ok(Loaded {
        fabric,
        settings,
        runtime_digest: hex::encode(hash.finalize()),
        keys,
        tls,
    })
}

/// Serves the endpoint from `threads` serving threads until `shutdown` completes, then drains
/// and stops every replica. With `record`, every control round's observation and decision is
/// written there (JSON lines).
pub async fn serve(
    path: PathBuf,
    record: Option<PathBuf>,
    threads: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let recorder = record
        .map(|p| gpucap_fabric::record::Recorder::create(&p))
        .transpose()?;
    let Loaded {
        fabric,
        settings,
        runtime_digest,
        keys,
        tls,
    } = load(&path).map_err(anyhow::Error::msg)?;
    let replicas_dir = fabric.state_dir.join("replicas");
    std::fs::create_dir_all(&replicas_dir)
        .with_context(|| format!("cannot create {}", replicas_dir.display()))?;
    let listeners = super::workers::bind(&fabric.listen, threads)?;
    let address = listeners[0].local_addr()?.to_string();
    let operator_listener = TcpListener::bind(&fabric.operator_listen)
        .await
        .with_context(|| {
            format!(
                "endpoint.operator_listen: cannot listen on {}",
                fabric.operator_listen
            )
        })?;
    let operator_address = operator_listener.local_addr()?.to_string();
    let metrics = FabricMetrics::new(&fabric.name);
    let gateway = Arc::new(
        Gateway::open(fabric.state_dir.join("quota.json"), &metrics.keys)
            .map_err(anyhow::Error::msg)?,
    );
    gateway.set(Setting {
        required: fabric.auth_required,
        keys,
    });
    let join = Arc::new(JoinHub::new(
        metrics.joins.clone(),
        metrics.join_refusals.clone(),
    ));
    let shared = Arc::new(Shared {
        fleet: Fleet::new(
            fabric.replica_concurrency,
            fabric.hold_capacity,
            fabric
                .scaling
                .budget
                .is_some_and(|b| b.reject_when_exhausted),
        ),
        metrics,
        window: LatencyWindow::default(),
        status: Mutex::default(),
        join,
        gateway: gateway.clone(),
        serving_threads: listeners.len(),
    });
    let pool_names: Vec<String> = fabric.pools.iter().map(|p| p.name.clone()).collect();
    shared.metrics.initialize(&pool_names);
    let state = RouterState::new(shared.clone(), settings);
    let address_file = fabric.address_file.clone();
    let operator_address_file = fabric.operator_address_file.clone();
    let tls = tls.map(RustlsConfig::from_config);
    tracing::info!(
        %address,
        operator = %operator_address,
        tls = tls.is_some(),
        threads = listeners.len(),
        auth = if fabric.auth_required { "api_key" } else { "none" },
        endpoint = %fabric.name,
        region = %fabric.router_region,
        pools = ?fabric.pools.iter().map(|p| &p.name).collect::<Vec<_>>(),
        "router listening"
    );
    let mut controller = Controller::new(shared.clone(), fabric, runtime_digest, address.clone());
    if let Some(recorder) = recorder {
        controller.record_to(recorder);
    }
    controller.adopt().await;

    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(reload_on_hangup(
        path.clone(),
        state.clone(),
        tls.clone(),
        reload_tx,
    ));
    let stop = CancellationToken::new();
    let control = tokio::spawn(controller.run(stop.clone(), reload_rx));
    let operator = tokio::spawn({
        let app = operator_router(state.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let stop = stop.clone();
        // No Nagle: joins a daemon passes on carry replicas' HTTP/2 frames.
        let listener = operator_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });
    // The addresses are published once the control loop runs, so whoever waits on them can ask
    // for status at once; the operator's first, as the public one is what waiters poll.
    for (file, value) in [
        (&operator_address_file, &operator_address),
        (&address_file, &address),
    ] {
        if let Some(file) = file {
            gpucap_fabric::process::write_atomically(file, value)
                .with_context(|| format!("cannot write the address file {}", file.display()))?;
        }
    }
    let mut workers = Workers::start(listeners, Front::new(state.clone()), tls)?;
    let on_shutdown = workers.shutdown_handle();
    tokio::spawn(async move {
        shutdown.await;
        state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutdown requested: refusing new requests, answering accepted ones");
        on_shutdown.shut_down();
    });
    let served = workers.served().await;
    // Every accepted request has been answered; now the replicas drain and stop.
    gateway.flush();
    shared.fleet.close();
    stop.cancel();
    control.await?;
    // Joined replicas' connections end as the control loop releases them; not waited on longer.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), operator).await;
    tokio::task::spawn_blocking(move || workers.finish()).await?;
    tracing::info!("every replica stopped; exiting");
    served.map_err(Into::into)
}

/// SIGHUP: the config file, the keys and the certificates are read again. What the routes use
/// changes at once; the rest goes to the control loop. A bad file is refused whole.
async fn reload_on_hangup(
    path: PathBuf,
    state: Arc<RouterState>,
    tls: Option<RustlsConfig>,
    to_control: tokio::sync::mpsc::Sender<Result<(Fabric, String), String>>,
) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP; config reloads are off");
        return;
    };
    while hangup.recv().await.is_some() {
        let next = load(&path).and_then(|l| {
            match (&tls, l.tls) {
                (Some(running), Some(config)) => running.reload_from_config(config),
                (None, None) => {}
                _ => return Err("turning TLS on or off needs a restart of the router".to_string()),
            }
            state.set_settings(l.settings);
            state.shared.gateway.set(Setting {
                required: l.fabric.auth_required,
                keys: l.keys,
            });
            Ok((l.fabric, l.runtime_digest))
        });
        if let Err(e) = &next {
            tracing::error!(error = %e, "reload refused; keeping the running config");
        }
        if to_control.send(next).await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    gpucap_runtime::shutdown::termination_signal().await;
}
