//! The router (data plane): one URL per endpoint, speaking the same Open Inference Protocol v2 as
//! the runtime. Health and metadata it answers itself (it has read the model's signature), so a
//! scaled-to-zero endpoint still describes itself; inference requests take a slot on a replica
//! from the [fleet](crate::fleet) and are forwarded over pooled keep-alive connections, bodies
//! unchanged (JSON or the binary tensor extension). A replica that fails a request before
//! answering — refused or reset connection, a 500/502/503 — is taken out of rotation and the
//! request is retried once on another replica: inference is idempotent.
//!
//! With `auth.mode = "api_key"` the [gateway](crate::gateway) admits metadata and inference
//! requests by key, and the operator routes (`/fabric/status`, `/fabric/targets`, `/metrics`,
//! which show replica addresses, pids, spend and key names) are served only on the operator
//! listener ([`operator_router`]), never on the public one. A key is never passed on to a
//! replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use gpucap_runtime::protocol::{ModelMetadata, ModelPath, ServerMetadata, Signature};
use gpucap_runtime::server::{ApiError, model_routes, protocol_fallbacks};

use crate::controller::Shared;
use crate::fleet::{Acquired, Refusal, Slot};
use crate::gateway::KnownKey;
use crate::upstream::Post;

/// What the routes need to know about the endpoint; replaced on reload.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The model's name in URLs.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its input and output.
    pub signature: Signature,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// How long a request may take, held time included.
    pub request_timeout: Duration,
    /// Whether the endpoint scales to zero (it is ready with no replica).
    pub scales_to_zero: bool,
}

/// The router's state.
pub struct RouterState {
    /// Shared with the control loop.
    pub shared: Arc<Shared>,
    /// The endpoint's settings: read per request by every serving thread, replaced on reload
    /// (an `ArcSwap`: a read writes no memory another thread reads).
    pub settings: ArcSwap<Settings>,
    /// Set once shutdown starts.
    pub draining: AtomicBool,
}

impl RouterState {
    /// State for a router over `shared`.
    pub fn new(shared: Arc<Shared>, settings: Settings) -> Arc<RouterState> {
        Arc::new(RouterState {
            shared,
            settings: ArcSwap::from_pointee(settings),
            draining: AtomicBool::new(false),
        })
    }

    /// The settings now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Replaces the settings (after a reload).
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && (self.settings().scales_to_zero || self.shared.fleet.any_ready())
    }
}

/// An answer the router gives itself, in the protocol's error form.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).into_response()
}

/// A refusal the client may retry shortly (`Retry-After: 1`).
fn retry_later(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).retry().into_response()
}

/// The operator's routes: status, service discovery, metrics.
fn operator_routes() -> Router<Arc<RouterState>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/fabric/status", get(status))
        .route("/fabric/targets", get(targets))
}

/// The public listener's routes: the protocol, joins, and the operator routes while no key is
/// required.
pub fn router(state: Arc<RouterState>) -> Router {
    let operator = operator_routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        open_endpoints_only,
    ));
    protocol_fallbacks(
        Router::new()
            .route("/v2", get(server_metadata))
            .route("/v2/health/live", get(|| async { StatusCode::OK }))
            .route("/v2/health/ready", get(server_ready))
            .merge(model_routes(model_metadata, model_ready, infer))
            .merge(operator),
    )
    .merge(crate::join::routes::routes(state.shared.join.clone()))
    .with_state(state)
}

/// The operator listener's routes (plain HTTP, loopback by default): the operator routes,
/// health, and joins (a daemon passes its replicas' joins on here).
pub fn operator_router(state: Arc<RouterState>) -> Router {
    operator_routes()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .merge(crate::join::routes::routes(state.shared.join.clone()))
        .with_state(state)
}

/// On the public listener, operator routes answer only while the endpoint needs no key: to a
/// key holder they do not exist.
async fn open_endpoints_only(
    State(s): AppState,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if s.shared.gateway.required() {
        return error(
            StatusCode::NOT_FOUND,
            "not found; operator routes are served on the router's operator listener",
        );
    }
    next.run(req).await
}

type AppState = State<Arc<RouterState>>;

async fn server_metadata(State(s): AppState, headers: HeaderMap) -> Response {
    if let Err(refusal) = s.shared.gateway.identify(&headers, None) {
        return refusal.into_response();
    }
    axum::Json(ServerMetadata::gpucap("gpucap-fabric")).into_response()
}

async fn server_ready(State(s): AppState) -> StatusCode {
    if s.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `Err` (a 404) unless the request names the served model (and version).
fn check_model(settings: &Settings, path: &ModelPath) -> Result<(), String> {
    path.check(&settings.name, &settings.version, "endpoint")
        .map_err(|e| e.to_string())
}

async fn model_metadata(
    State(s): AppState,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = s.shared.gateway.identify(&headers, None) {
        return refusal.into_response();
    }
    let settings = s.settings();
    match check_model(&settings, &path) {
        Ok(()) => axum::Json(
            ModelMetadata::describe(&settings.name, &settings.version, &settings.signature)
                .served_by(s.shared.fleet.ready_backends()),
        )
        .into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn model_ready(State(s): AppState, Path(path): Path<ModelPath>) -> Response {
    match check_model(&s.settings(), &path) {
        Ok(()) if s.ready() => StatusCode::OK.into_response(),
        Ok(()) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

async fn metrics(State(s): AppState) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.shared.metrics.render(),
    )
}

async fn status(State(s): AppState) -> Response {
    let status = s
        .shared
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    axum::Json(status).into_response()
}

/// Prometheus HTTP service discovery: every replica with an address, labelled with its pool.
async fn targets(State(s): AppState) -> Response {
    let name = s.settings().name.clone();
    let groups: Vec<serde_json::Value> = s
        .shared
        .fleet
        .members()
        .into_iter()
        .filter_map(|m| {
            Some(serde_json::json!({
                "targets": [m.address?],
                "labels": {"endpoint": name, "pool": m.pool_name, "replica": m.id},
            }))
        })
        .collect();
    axum::Json(groups).into_response()
}

async fn infer(
    State(s): AppState,
    Path(path): Path<ModelPath>,
    request: axum::extract::Request,
) -> Response {
    forward_inference(s, path, request).await
}

/// Answers an inference request for `model`: admitted by the gateway, forwarded to a replica.
/// The public listener's [front door](crate::front) calls it directly; the routes call it for
/// the paths the door leaves to them.
pub async fn forward_inference(
    s: Arc<RouterState>,
    model: ModelPath,
    request: axum::extract::Request,
) -> Response {
    // Taken apart rather than extracted piecewise: the headers move, uncopied.
    let (parts, body) = request.into_parts();
    let uri = parts.uri;
    let request = InferRequest {
        path: model,
        target: uri
            .path_and_query()
            .map_or(uri.path(), |p| p.as_str())
            .to_string(),
        headers: parts.headers,
        body: Payload::Unread(body),
    };
    forward(s, request, None).await
}

/// Answers an inference request whose body the caller read already, or left unread as longer
/// than the endpoint's limit (the [front door's HTTP/1.1 loop](crate::front)): `target` is the
/// request's path and query; `known` is the key the connection presented before.
pub async fn forward_read(
    s: Arc<RouterState>,
    model: ModelPath,
    target: String,
    headers: HeaderMap,
    body: Payload,
    known: &mut KnownKey,
) -> Response {
    let request = InferRequest {
        path: model,
        target,
        headers,
        body,
    };
    forward(s, request, Some(known)).await
}

/// An inference request as it arrived.
struct InferRequest {
    path: ModelPath,
    /// The path and query, passed on to the replica as they came.
    target: String,
    headers: HeaderMap,
    body: Payload,
}

/// An inference request's body.
pub enum Payload {
    /// Still to be read, once the key is checked, up to the endpoint's limit.
    Unread(Body),
    /// Read already.
    Read(Bytes),
    /// Declared longer than the endpoint's limit, and not read.
    OverLimit,
}

/// Where a request's time went, for the overhead metric.
#[derive(Default)]
struct Timing {
    held: Duration,
    upstream: Duration,
}

async fn forward(
    s: Arc<RouterState>,
    request: InferRequest,
    known: Option<&mut KnownKey>,
) -> Response {
    let started = Instant::now();
    let mut timing = Timing::default();
    let (response, slot_labels) = route(&s, request, &mut timing, started, known).await;
    let metrics = &s.shared.metrics;
    let code = response.status().as_u16();
    // One clock read for the window and the histograms: each costs as much as a counter.
    let ended = Instant::now();
    let total = ended.duration_since(started);
    match &slot_labels {
        Some((pool, replica)) => {
            metrics.request(pool, replica, code);
            s.shared.window.record(ended, total);
        }
        None => metrics.own_answer(code),
    }
    metrics.request_seconds.observe(total.as_secs_f64());
    if slot_labels.is_some() {
        let own = total.saturating_sub(timing.held + timing.upstream);
        metrics.overhead_seconds.observe(own.as_secs_f64());
    }
    response
}

/// The answer, and the pool and replica that gave it (none when the router answered itself).
async fn route(
    s: &RouterState,
    request: InferRequest,
    timing: &mut Timing,
    started: Instant,
    known: Option<&mut KnownKey>,
) -> (Response, Option<(Arc<str>, Arc<str>)>) {
    let InferRequest {
        path: model,
        target,
        headers,
        body,
    } = request;
    let key = match s.shared.gateway.identify(&headers, known) {
        Ok(key) => key,
        Err(refusal) => return (refusal.into_response(), None),
    };
    // What the request needs of the settings, copied: the snapshot is not held across awaits.
    let (max_body_bytes, request_timeout) = {
        let settings = s.settings.load();
        if let Err(e) = check_model(&settings, &model) {
            return (error(StatusCode::NOT_FOUND, e), None);
        }
        (settings.max_body_bytes, settings.request_timeout)
    };
    if s.draining.load(Ordering::Relaxed) {
        return (
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "the router is shutting down",
            ),
            None,
        );
    }
    let read = match body {
        Payload::Read(bytes) if bytes.len() <= max_body_bytes => Ok(bytes),
        Payload::Read(_) | Payload::OverLimit => Err(()),
        // Refused by its declared length, not after reading that much.
        Payload::Unread(body)
            if usize::try_from(body.size_hint().lower())
                .map_or(true, |length| length > max_body_bytes) =>
        {
            Err(())
        }
        Payload::Unread(body) => axum::body::to_bytes(body, max_body_bytes)
            .await
            .map_err(drop),
    };
    let bytes = match read {
        Ok(b) => b,
        Err(()) => {
            return (
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body exceeds the endpoint's limit of {} bytes; send fewer rows per request",
                        max_body_bytes
                    ),
                ),
                None,
            );
        }
    };
    // The key is let go here (it lends the key table), not held while the replica answers.
    if let Some(key) = key
        && let Err(refusal) = s
            .shared
            .gateway
            .admit(&key, crate::gateway::rows::rows_of(&headers, &bytes))
    {
        return (refusal.into_response(), None);
    }
    let deadline = started + request_timeout;
    let mut exclude: Option<Arc<str>> = None;
    for attempt in 0..2 {
        let slot = match take_slot(s, exclude.as_deref(), deadline, timing).await {
            Ok(slot) => slot,
            Err(r) => return (r, None),
        };
        let sent = Instant::now();
        let result = tokio::time::timeout_at(
            deadline.into(),
            send(&slot, &target, &headers, &bytes, sent),
        )
        .await;
        timing.upstream += sent.elapsed();
        let labels = Some((slot.pool.clone(), slot.replica.clone()));
        let retry_reason = match result {
            Err(_) => {
                return (
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "replica {} did not answer within the request timeout ({} ms)",
                            slot.replica,
                            request_timeout.as_millis()
                        ),
                    ),
                    labels,
                );
            }
            Ok(Ok(resp)) if !replica_fault(resp.status()) || attempt == 1 => {
                return (resp, labels);
            }
            Ok(Ok(resp)) => format!("status_{}", resp.status().as_u16()),
            Ok(Err(e)) if attempt == 1 => {
                s.shared.fleet.fail(&slot.replica);
                return (
                    error(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "replica {} failed the request after a retry: {e}",
                            slot.replica
                        ),
                    ),
                    labels,
                );
            }
            Ok(Err(_)) => "connection".to_string(),
        };
        if s.shared.fleet.fail(&slot.replica) {
            tracing::warn!(replica = %slot.replica, reason = %retry_reason, "replica failed a request; out of rotation, retrying elsewhere");
        }
        crate::metrics::FabricMetrics::named(&s.shared.metrics.retries, &retry_reason).inc();
        exclude = Some(slot.replica.clone());
    }
    (
        error(StatusCode::BAD_GATEWAY, "no replica could answer"),
        None,
    )
}

/// Statuses that say the replica, not the request, is at fault: take it out and retry.
fn replica_fault(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// A slot now, or held until one frees up, a replica becomes ready, or the deadline.
async fn take_slot(
    s: &RouterState,
    exclude: Option<&str>,
    deadline: Instant,
    timing: &mut Timing,
) -> Result<Slot, Response> {
    let rx = match s.shared.fleet.acquire(exclude) {
        Acquired::Now(slot) => return Ok(slot),
        Acquired::Held(rx) => rx,
        Acquired::Refused(Refusal::HoldFull) => {
            return Err(retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "every replica is saturated and the router's hold queue is full; retry later",
            ));
        }
        Acquired::Refused(Refusal::BudgetExhausted) => {
            return Err(retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "every replica is saturated and the burst budget allows no more (on_exhausted = \"reject\"); retry later",
            ));
        }
        Acquired::Refused(Refusal::ShuttingDown) => {
            return Err(retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "the router is shutting down",
            ));
        }
    };
    let held = Instant::now();
    let got = tokio::time::timeout_at(deadline.into(), rx).await;
    timing.held += held.elapsed();
    match got {
        Ok(Ok(slot)) => Ok(slot),
        _ => Err(retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "no replica had room for the request within the request timeout; replicas may still be starting, retry later",
        )),
    }
}

/// Headers that belong to one connection, not to the request (the length is set again from
/// the body); and the client's key, which no replica needs or may see.
const HOP_BY_HOP: [header::HeaderName; 11] = [
    header::AUTHORIZATION,
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::CONTENT_LENGTH,
];

/// Whether `name` is one of [`HOP_BY_HOP`]: not sent to a replica, nor passed back.
fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Sends the request to the slot's replica and reads the whole answer, so that a replica that
/// dies mid-answer fails the attempt (and the request is retried) instead of the client's
/// response.
async fn send(
    slot: &Slot,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    sent: Instant,
) -> Result<Response, String> {
    let post = Post {
        path,
        headers,
        skip: is_hop_by_hop,
        body,
    };
    let answer = crate::upstream::post(&slot.address, post, sent).await?;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_and_the_connection_headers_are_never_forwarded_the_rest_are() {
        for name in [
            header::AUTHORIZATION,
            header::CONNECTION,
            header::HOST,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::HeaderName::from_static("keep-alive"),
        ] {
            assert!(is_hop_by_hop(&name), "{name}");
        }
        for name in [
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("inference-header-content-length"),
            header::HeaderName::from_static("x-request-id"),
        ] {
            assert!(!is_hop_by_hop(&name), "{name}");
        }
    }
}
