//! The HTTP front door: Open Inference Protocol v2 routes, `/metrics`, and graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::batcher::{Batcher, InferError, NativeEngine};
use crate::metrics::Metrics;
use crate::onnx::OnnxEngine;
use crate::protocol::{
    self, EncodedResponse, HEADER_CONTENT_LENGTH, ModelMetadata, ModelPath, ModelSignature,
    ServerMetadata, Signature,
};

/// The model behind the routes and the batcher its requests go through.
pub enum Served {
    /// gpucap's own format: one FP32 input and one FP32 output, row by row.
    Native {
        /// The input and output widths the codec checks requests against.
        codec: ModelSignature,
        /// The batcher over the native backends.
        batcher: Batcher<NativeEngine>,
    },
    /// An ONNX graph: named tensors of any datatype.
    Onnx {
        /// Whether requests are concatenated into batches (the graph has a dynamic first
        /// dimension everywhere); otherwise each runs alone.
        batched: bool,
        /// The batcher over the ONNX Runtime sessions.
        batcher: Batcher<OnnxEngine>,
    },
}

impl Served {
    /// Whether at least one backend can compute.
    pub fn ready(&self) -> bool {
        match self {
            Served::Native { batcher, .. } => batcher.ready(),
            Served::Onnx { batcher, .. } => batcher.ready(),
        }
    }

    fn refuse_if_full(&self) -> Result<(), InferError> {
        match self {
            Served::Native { batcher, .. } => batcher.refuse_if_full(),
            Served::Onnx { batcher, .. } => batcher.refuse_if_full(),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The model's name in URLs.
    pub model_name: String,
    /// The model's version.
    pub model_version: String,
    /// The model's inputs and outputs, as its metadata reports them.
    pub signature: Signature,
    /// What computes, one description per backend (device, and the ONNX execution provider).
    pub backends: Vec<String>,
    /// The model and its batcher.
    pub served: Served,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Set once shutdown starts: readiness fails and new inferences are refused.
    pub draining: AtomicBool,
}

impl AppState {
    /// Shared state for a model with `signature` served through `served` on `backends`.
    pub fn new(
        model_name: String,
        model_version: String,
        signature: Signature,
        backends: Vec<String>,
        served: Served,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
    ) -> Self {
        AppState {
            model_name,
            model_version,
            signature,
            backends,
            served,
            metrics,
            max_body_bytes,
            draining: AtomicBool::new(false),
        }
    }
}

/// An error response in the protocol's form: `{"error": "..."}` with a status and, for load
/// shedding, `Retry-After`. The fabric's router answers its own errors with it too.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: false,
        }
    }

    /// Adds `Retry-After: 1`: the client may try again shortly.
    pub fn retry(mut self) -> Self {
        self.retry_after = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        let status = match e {
            InferError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            InferError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            InferError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            InferError::TooManyRows { .. } => StatusCode::BAD_REQUEST,
            InferError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            InferError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let retry = matches!(
            e,
            InferError::QueueFull { .. } | InferError::ShuttingDown | InferError::Unavailable(_)
        );
        let err = ApiError::new(status, e.to_string());
        if retry { err.retry() } else { err }
    }
}

/// The protocol's model routes — metadata, readiness and inference, each with and without a
/// version — onto the three handlers; the runtime and the fabric's router serve the same ones.
pub fn model_routes<S, M, MT, R, RT, I, IT>(metadata: M, ready: R, infer: I) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    M: Handler<MT, S>,
    R: Handler<RT, S>,
    I: Handler<IT, S>,
    MT: 'static,
    RT: 'static,
    IT: 'static,
{
    ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"]
        .into_iter()
        .fold(Router::new(), |r, prefix| {
            r.route(prefix, get(metadata.clone()))
                .route(&format!("{prefix}/ready"), get(ready.clone()))
                .route(&format!("{prefix}/infer"), post(infer.clone()))
        })
}

/// The router with every route of the protocol.
pub fn router(state: Arc<AppState>) -> Router {
    protocol_fallbacks(
        Router::new()
            .route("/v2", get(server_metadata))
            .route("/v2/health/live", get(|| async { StatusCode::OK }))
            .route("/v2/health/ready", get(server_ready))
            .merge(model_routes(model_metadata, model_ready, infer))
            .route("/metrics", get(metrics)),
    )
    .with_state(state)
}

/// Unknown routes and methods answered in the protocol's error form (404, 405).
pub fn protocol_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
}

type Shared = State<Arc<AppState>>;

async fn server_metadata() -> axum::Json<ServerMetadata> {
    axum::Json(ServerMetadata::gpucap("gpucap-runtime"))
}

async fn server_ready(State(s): Shared) -> StatusCode {
    if s.draining.load(Ordering::Relaxed) || !s.served.ready() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

fn check_model(s: &AppState, path: &ModelPath) -> Result<(), ApiError> {
    path.check(&s.model_name, &s.model_version, "server")
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))
}

async fn model_metadata(
    State(s): Shared,
    Path(path): Path<ModelPath>,
) -> Result<axum::Json<ModelMetadata>, ApiError> {
    check_model(&s, &path)?;
    Ok(axum::Json(
        ModelMetadata::describe(&s.model_name, &s.model_version, &s.signature)
            .served_by(s.backends.clone()),
    ))
}

async fn model_ready(
    State(s): Shared,
    Path(path): Path<ModelPath>,
) -> Result<StatusCode, ApiError> {
    check_model(&s, &path)?;
    Ok(server_ready(State(s)).await)
}

async fn metrics(State(s): Shared) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn infer(
    State(s): Shared,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let resp = {
        // A guard, so that a request whose client goes away (the handler is dropped) leaves the
        // count too; it leaves before the request is counted as done, so that no request is
        // ever counted in both.
        let _inflight = InFlight::enter(&s.metrics);
        match run_infer(&s, &path, &headers, body).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    };
    s.metrics
        .request_done(resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// One inference request counted in `gpucap_inflight_requests` while it lives.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.inflight_requests.inc();
        InFlight(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight_requests.dec();
    }
}

async fn run_infer(
    s: &AppState,
    path: &ModelPath,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_model(s, path)?;
    if s.draining.load(Ordering::Relaxed) {
        s.metrics.reject("draining");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
        .retry());
    }
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && enc.as_bytes() != b"identity"
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {} is not supported; send the body uncompressed",
                String::from_utf8_lossy(enc.as_bytes())
            ),
        ));
    }
    let json_len = match headers.get(HEADER_CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "Inference-Header-Content-Length: not a byte count",
                    )
                })?,
        ),
    };
    let bytes = axum::body::to_bytes(body, s.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body exceeds the limit of {} bytes (server.max_body_bytes); send fewer rows per request",
                    s.max_body_bytes
                ),
            )
        })?;
    // Refuse before decoding when the queue is already full: decoding is the expensive part of a
    // request, and an overloaded server should spend its CPU on the requests it can serve. The body
    // is still read, so the client's write completes and it reliably sees the 429.
    s.served.refuse_if_full()?;
    let encoded = match &s.served {
        Served::Native { codec, batcher } => {
            infer_native(s, codec, batcher, &bytes, json_len).await?
        }
        Served::Onnx { batched, batcher } => {
            let mut req = protocol::decode_tensor_request(&bytes, json_len, &s.signature, *batched)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.0))?;
            let outputs = batcher
                .infer(std::mem::take(&mut req.inputs), req.rows)
                .await?
                .map_err(|e| {
                    let status = if e.invalid_input {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    };
                    ApiError::new(status, e.message)
                })?;
            protocol::encode_tensor_response(
                &s.model_name,
                &s.model_version,
                &s.signature,
                &req,
                &outputs,
            )
        }
    };
    let mut resp = Response::new(Body::from(encoded.body));
    let h = resp.headers_mut();
    match encoded.json_len {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(resp)
}

async fn infer_native(
    s: &AppState,
    codec: &ModelSignature,
    batcher: &Batcher<NativeEngine>,
    bytes: &[u8],
    json_len: Option<usize>,
) -> Result<EncodedResponse, ApiError> {
    let mut req = protocol::decode_infer_request(bytes, json_len, codec)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.0))?;
    let outputs = batcher
        .infer(std::mem::take(&mut req.input), req.rows)
        .await?;
    if let Some(i) = outputs.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the model's output for row {} overflowed to a non-finite value; the input is outside the range the model handles",
                i / codec.output_width.max(1)
            ),
        ));
    }
    Ok(protocol::encode_infer_response(
        &s.model_name,
        &s.model_version,
        &codec.output_name,
        codec.output_width,
        &req,
        &outputs,
    ))
}
