//! Wiring for `gpucap-fabric serve`: read and check the config, bind, adopt the replicas recorded
//! in `state_dir`, run the router and the control loop. SIGHUP reloads the config file (a bad one
//! is refused and the running config kept); SIGTERM or SIGINT drains: no new connections, every
//! accepted request answered, then every replica drained and stopped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use axum::serve::ListenerExt as _;
use gpucap_fabric::config::{Fabric, FabricConfig};
use gpucap_fabric::controller::{Controller, Shared};
use gpucap_fabric::fleet::Fleet;
use gpucap_fabric::join::JoinHub;
use gpucap_fabric::metrics::FabricMetrics;
use gpucap_fabric::router::{RouterState, Settings, router};
use gpucap_fabric::signals::LatencyWindow;

/// A config file read, checked and ready to run.
pub struct Loaded {
    /// The validated config.
    pub fabric: Fabric,
    /// What the routes need.
    pub settings: Settings,
    /// Digest of everything replicas are started with.
    pub runtime_digest: String,
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
    })
}

/// Serves the endpoint until `shutdown` completes, then drains and stops every replica. With
/// `record`, every control round's observation and decision is written there (JSON lines).
pub async fn serve(
    path: PathBuf,
    record: Option<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let recorder = record
        .map(|p| gpucap_fabric::record::Recorder::create(&p))
        .transpose()?;
    let Loaded {
        fabric,
        settings,
        runtime_digest,
    } = load(&path).map_err(anyhow::Error::msg)?;
    let replicas_dir = fabric.state_dir.join("replicas");
    std::fs::create_dir_all(&replicas_dir)
        .with_context(|| format!("cannot create {}", replicas_dir.display()))?;
    let listener = TcpListener::bind(&fabric.listen)
        .await
        .with_context(|| format!("cannot listen on {}", fabric.listen))?;
    let address = listener.local_addr()?.to_string();
    let metrics = FabricMetrics::new(&fabric.name);
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
    });
    let pool_names: Vec<String> = fabric.pools.iter().map(|p| p.name.clone()).collect();
    shared.metrics.initialize(&pool_names);
    let state = RouterState::new(shared.clone(), settings);
    let address_file = fabric.address_file.clone();
    tracing::info!(
        %address,
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
    let reload_state = state.clone();
    let reload_path = path.clone();
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; config reloads are off");
            return;
        };
        while hangup.recv().await.is_some() {
            let next = load(&reload_path).map(|l| {
                reload_state.set_settings(l.settings);
                (l.fabric, l.runtime_digest)
            });
            if let Err(e) = &next {
                tracing::error!(error = %e, "reload refused; keeping the running config");
            }
            if reload_tx.send(next).await.is_err() {
                return;
            }
        }
    });
    let stop = CancellationToken::new();
    let control = tokio::spawn(controller.run(stop.clone(), reload_rx));
    // The address is published once the control loop runs, so whoever waits on it can ask for
    // status at once.
    if let Some(file) = &address_file {
        gpucap_fabric::process::write_atomically(file, &address)
            .with_context(|| format!("cannot write the address file {}", file.display()))?;
    }
    let draining = state.clone();
    let on_shutdown = async move {
        shutdown.await;
        draining
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutdown requested: refusing new requests, answering accepted ones");
    };
    // No Nagle: joined replicas' HTTP/2 frames arrive on these connections too.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(on_shutdown)
    .await;
    // Every accepted request has been answered; now the replicas drain and stop.
    shared.fleet.close();
    stop.cancel();
    control.await?;
    tracing::info!("every replica stopped; exiting");
    served.map_err(Into::into)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    gpucap_runtime::shutdown::termination_signal().await;
}
