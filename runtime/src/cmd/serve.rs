//! Wiring for `gpucap-runtime serve`: load the model, build the backend and batcher, bind, serve,
//! and on SIGTERM or SIGINT drain: stop accepting, answer everything accepted, then exit.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use tokio::net::TcpListener;

use gpucap_runtime::backend::{BackendOptions, create_backends};
use gpucap_runtime::batcher::{BatchWorkers, Batcher, Engine, NativeEngine};
use gpucap_runtime::config::ValidConfig;
use gpucap_runtime::metrics::Metrics;
use gpucap_runtime::model::{is_onnx, load_model};
use gpucap_runtime::onnx::{self, Batching, read_graph};
use gpucap_runtime::protocol::{ModelSignature, Signature};
use gpucap_runtime::server::{AppState, Served, router};

/// A loaded model behind its batcher, ready to be served.
pub struct Prepared {
    /// What the HTTP routes serve from.
    pub state: Arc<AppState>,
    /// The batch workers; joined once every handler is gone.
    pub workers: BatchWorkers,
    /// The backends, as logged.
    pub backend: String,
}

impl Prepared {
    /// Waits for the workers to answer what is queued and exit (every handler is gone).
    pub async fn finish(self) -> anyhow::Result<()> {
        drop(self.state);
        let workers = self.workers;
        tokio::task::spawn_blocking(move || workers.join()).await?;
        Ok(())
    }
}

/// Loads the model and starts the backends and the batcher.
pub async fn prepare(cfg: &ValidConfig) -> anyhow::Result<Prepared> {
    if is_onnx(&cfg.model_path) {
        prepare_onnx(cfg).await
    } else {
        prepare_native(cfg).await
    }
}

async fn prepare_native(cfg: &ValidConfig) -> anyhow::Result<Prepared> {
    let path = cfg.model_path.clone();
    let model = tokio::task::spawn_blocking(move || load_model(&path))
        .await?
        .with_context(|| format!("model {}", cfg.model_path.display()))?;
    let model = Arc::new(model);
    tracing::info!(
        model = %cfg.model_name,
        path = %cfg.model_path.display(),
        parameters = model.parameter_count(),
        input = %model.input_name,
        output = %model.output_name,
        "model loaded"
    );
    let options = BackendOptions {
        max_batch_rows: cfg.batch.max_batch_size,
        threads: cfg.threads,
        precision: cfg.precision,
    };
    let device = cfg.device.clone();
    let backend_model = model.clone();
    let backends =
        tokio::task::spawn_blocking(move || create_backends(&device, backend_model, &options))
            .await?
            .map_err(anyhow::Error::msg)?;
    let output_width = model.output_width();
    let engines: Vec<NativeEngine> = backends
        .into_iter()
        .map(|b| NativeEngine::new(b, output_width))
        .collect();
    let codec = ModelSignature::of(&model);
    // The backends hold what they compute with (the CPU backend its packed copy); the row-major
    // weights are freed here unless a GPU backend keeps them to rebuild its device state.
    drop(model);
    start(cfg, engines, codec.tensors(), |batcher| Served::Native {
        codec,
        batcher,
    })
}

async fn prepare_onnx(cfg: &ValidConfig) -> anyhow::Result<Prepared> {
    let path = cfg.model_path.clone();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(&path))
        .await?
        .with_context(|| format!("model {}", cfg.model_path.display()))?;
    let graph =
        read_graph(&bytes).with_context(|| format!("model {}", cfg.model_path.display()))?;
    graph
        .check_batch_size(cfg.batch.max_batch_size)
        .map_err(|e| anyhow::anyhow!("model {}: {e}", cfg.model_path.display()))?;
    let runtime = onnx::load(cfg.onnxruntime.as_deref())?;
    let signature = graph.signature();
    let batched = graph.batching == Batching::Dynamic;
    tracing::info!(
        model = %cfg.model_name,
        path = %cfg.model_path.display(),
        signature = %signature,
        batching = %graph.batching_summary(),
        onnxruntime = %runtime.path.display(),
        onnxruntime_version = %runtime.version,
        "ONNX model loaded"
    );
    let graph = Arc::new(graph);
    let device = cfg.device.clone();
    let threads = cfg.threads;
    let engines = tokio::task::spawn_blocking(move || {
        onnx::create_engines(runtime, &bytes, graph, &device, threads)
    })
    .await?
    .map_err(|e| anyhow::anyhow!("model {}: {e}", cfg.model_path.display()))?;
    start(cfg, engines, signature, |batcher| Served::Onnx {
        batched,
        batcher,
    })
}

/// Starts the batcher over `engines` and the state the routes share.
fn start<E: Engine>(
    cfg: &ValidConfig,
    engines: Vec<E>,
    signature: Signature,
    served: impl FnOnce(Batcher<E>) -> Served,
) -> anyhow::Result<Prepared> {
    let backends: Vec<String> = engines.iter().map(|b| b.describe()).collect();
    let backend = backends.join(", ");
    let metrics = Arc::new(Metrics::new(&cfg.model_name, &backend));
    let (batcher, workers) = Batcher::start(engines, cfg.batch, metrics.clone())?;
    let state = Arc::new(AppState::new(
        cfg.model_name.clone(),
        cfg.model_version.clone(),
        signature,
        backends,
        served(batcher),
        metrics,
        cfg.max_body_bytes,
    ));
    Ok(Prepared {
        state,
        workers,
        backend,
    })
}

/// Serves until `shutdown` completes, then drains and returns.
pub async fn serve(
    cfg: ValidConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let prepared = prepare(&cfg).await?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let address = listener.local_addr()?;
    if let Some(file) = &cfg.address_file {
        write_atomically(file, &address.to_string())
            .with_context(|| format!("cannot write the address file {}", file.display()))?;
    }
    tracing::info!(%address, backend = %prepared.backend, batch = ?cfg.batch, "serving");

    let draining = prepared.state.clone();
    let on_shutdown = async move {
        shutdown.await;
        draining.draining.store(true, Ordering::Relaxed);
        tracing::info!("shutdown requested: refusing new requests, answering accepted ones");
    };
    axum::serve(listener, router(prepared.state.clone()))
        .with_graceful_shutdown(on_shutdown)
        .await?;
    // Every connection has closed, so every handler (and its Batcher reference) is gone; the worker
    // answers whatever is still queued and exits once the queue is empty.
    prepared.finish().await?;
    tracing::info!("drained; exiting");
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader never sees a half-written file.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
