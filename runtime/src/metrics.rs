//! Prometheus metrics: the signals burst policies act on (queue depth, latency, rejections) and
//! the ones operators tune batching with (batch sizes, queue wait versus compute time).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels for per-request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// HTTP status code as text.
    pub code: String,
}

/// Labels for rejections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why the request was refused: `queue_full`, `draining`, `timeout`.
    pub reason: String,
}

/// All the runtime's metrics, registered under the `gpucap_` prefix.
pub struct Metrics {
    registry: Registry,
    /// Requests waiting in the batcher's queue.
    pub queue_depth: Gauge,
    /// Inference requests received and not yet answered: from the handler's start (the body
    /// still being read) until its response is handed to the HTTP layer. With `queue_depth` it
    /// tells work waiting from work in hand.
    pub inflight_requests: Gauge,
    /// Rows per executed batch.
    pub batch_rows: Histogram,
    /// Seconds a request waited between being queued and its batch starting.
    pub queue_wait_seconds: Histogram,
    /// Seconds the backend spent on one batch.
    pub compute_seconds: Histogram,
    /// Seconds from request arrival to response, for inference requests, by HTTP status: kept
    /// apart so that fast refusals do not make served requests look faster than they are.
    pub request_seconds: Family<StatusLabels, Histogram, fn() -> Histogram>,
    /// Inference requests by HTTP status.
    pub requests: Family<StatusLabels, Counter>,
    /// Requests refused without being computed, by reason.
    pub rejections: Family<ReasonLabels, Counter>,
    /// Total seconds the backend was busy: the runtime's device utilisation over time.
    pub backend_busy_seconds: Counter<f64, AtomicU64>,
    /// Backends (one per GPU, or the CPU) able to compute; the server is ready while this is
    /// above zero.
    pub healthy_backends: Gauge,
}

impl Metrics {
    /// Creates and registers every metric; `model` and `backend` become constant labels.
    pub fn new(model: &str, backend: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "gpucap",
            [
                ("model".into(), model.to_string().into()),
                ("backend".into(), backend.to_string().into()),
            ]
            .into_iter(),
        );
        let queue_depth = Gauge::default();
        let inflight_requests = Gauge::default();
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let queue_wait_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let compute_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let request_seconds: Family<StatusLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 20)));
        let requests = Family::default();
        let rejections = Family::default();
        let backend_busy_seconds = Counter::default();
        let healthy_backends = Gauge::default();
        registry.register(
            "queue_depth",
            "Inference requests waiting in the batch queue",
            queue_depth.clone(),
        );
        registry.register(
            "inflight_requests",
            "Inference requests received and not yet answered",
            inflight_requests.clone(),
        );
        registry.register("batch_rows", "Rows per executed batch", batch_rows.clone());
        registry.register(
            "queue_wait_seconds",
            "Time from queueing to the start of the request's batch",
            queue_wait_seconds.clone(),
        );
        registry.register(
            "compute_seconds",
            "Backend time per batch",
            compute_seconds.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from arrival to response for inference requests",
            request_seconds.clone(),
        );
        registry.register(
            "inference_requests",
            "Inference requests by HTTP status code",
            requests.clone(),
        );
        registry.register(
            "rejected_requests",
            "Inference requests refused before computing, by reason",
            rejections.clone(),
        );
        registry.register(
            "backend_busy_seconds",
            "Seconds the backend spent computing batches",
            backend_busy_seconds.clone(),
        );
        registry.register(
            "healthy_backends",
            "Backends (one per GPU, or the CPU) able to compute batches",
            healthy_backends.clone(),
        );
        // Exported as 0 from the start, so a dashboard sees "none yet" rather than "no such metric".
        for reason in ["queue_full", "draining", "timeout"] {
            let _ = rejections.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        Metrics {
            registry,
            queue_depth,
            inflight_requests,
            batch_rows,
            queue_wait_seconds,
            compute_seconds,
            request_seconds,
            requests,
            rejections,
            backend_busy_seconds,
            healthy_backends,
        }
    }

    /// Counts a refusal.
    pub fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a finished inference request.
    pub fn request_done(&self, code: u16, seconds: f64) {
        let labels = StatusLabels {
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
