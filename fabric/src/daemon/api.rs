//! The admin API, `/v1/…`: endpoints created or replaced with an idempotent `PUT` (conditional
//! with `If-Match` / `If-None-Match: *`), read, listed and deleted; the pool ledger; health and
//! the OpenAPI description. Everything but health and the description needs the bearer token;
//! errors are problem details naming the key at fault.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio_util::sync::CancellationToken;

use super::auth;
use super::host::{self, Host, Put};
use super::keys::KeyPut;
use super::wire::{EndpointList, Health, PoolList, PoolView, Problem};
use crate::config::FabricConfig;
use crate::gateway::keys::KeySpec;

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// What the handlers share.
pub struct Api {
    /// The endpoints.
    pub host: Host,
    /// The SHA-256 of the token; replaced on SIGHUP.
    pub token_hash: RwLock<String>,
    /// Cancelled when the daemon stops: deploys in progress give up.
    pub stop: CancellationToken,
    /// When the last call ended, for `exit_when_idle`.
    pub last_call: std::sync::Mutex<std::time::Instant>,
    /// Calls being answered: an idle daemon never exits under one (a create has no record
    /// until its router converged).
    pub in_flight: std::sync::atomic::AtomicUsize,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(&self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gpucap-fabric\""),
            );
        }
        resp
    }
}

/// The admin API's routes.
pub fn routes(api: Arc<Api>) -> Router {
    let guarded = Router::new()
        .route("/v1/endpoints", get(list))
        .route("/v1/endpoints/{name}", get(read).put(put).delete(delete))
        .route("/v1/endpoints/{name}/keys", get(keys))
        .route(
            "/v1/endpoints/{name}/keys/{key}",
            axum::routing::put(put_key).delete(delete_key),
        )
        .route("/v1/pools", get(pools))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/join/{name}/{leaf}", any(join))
        .merge(guarded)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(api.clone(), note_call))
        .with_state(api)
}

/// Any call, even a refused one, keeps an idle daemon from exiting while it is answered and
/// for a while after.
async fn note_call(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    use std::sync::atomic::Ordering::SeqCst;
    api.in_flight.fetch_add(1, SeqCst);
    let resp = next.run(req).await;
    *api.last_call.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
    api.in_flight.fetch_sub(1, SeqCst);
    resp
}

async fn require_token(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let expected = api
        .token_hash
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if auth::authorized(presented, &expected) {
        return next.run(req).await;
    }
    let detail = match presented {
        None => "no Authorization header; send Authorization: Bearer TOKEN",
        Some(h) if !h.starts_with("Bearer ") => {
            "the Authorization header is not a bearer token; send Authorization: Bearer TOKEN"
        }
        Some(_) => "the token is not this daemon's",
    };
    Problem::new(401, "unauthorized", "Not authorized", detail)
        .at("Authorization")
        .into_response()
}

/// A replica joining an endpoint: passed to its router, which checks the claim.
async fn join(
    State(api): State<Arc<Api>>,
    Path((name, leaf)): Path<(String, String)>,
    req: Request,
) -> Response {
    match api.host.router_address(&name) {
        Some(address) => super::join::forward(&address, &leaf, req).await,
        None => (StatusCode::NOT_FOUND, "join refused\n").into_response(),
    }
}

async fn not_found() -> Problem {
    Problem::new(
        404,
        "not-found",
        "No such resource",
        "the admin API serves /v1/health, /v1/openapi.json, /v1/endpoints[/NAME[/keys[/KEY]]] and /v1/pools",
    )
}

async fn health(State(api): State<Arc<Api>>) -> axum::Json<Health> {
    let site = api.host.site();
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        region: site.region.clone(),
        jurisdiction: site.jurisdiction.clone(),
        endpoints: api.host.names().len(),
    })
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn list(State(api): State<Arc<Api>>) -> axum::Json<EndpointList> {
    let mut endpoints = Vec::new();
    for name in api.host.names() {
        if let Some(view) = api.host.get(&name).await {
            endpoints.push(view);
        }
    }
    axum::Json(EndpointList { endpoints })
}

fn unknown(name: &str) -> Problem {
    Problem::new(
        404,
        "unknown-endpoint",
        "No such endpoint",
        format!("this daemon hosts no endpoint named {name:?}"),
    )
}

fn with_etag(status: StatusCode, view: super::wire::EndpointView) -> Response {
    let etag = format!("\"{}\"", view.etag);
    let mut resp = (status, axum::Json(view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

async fn read(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.host.get(&name).await {
        Some(view) => with_etag(StatusCode::OK, view),
        None => unknown(&name).into_response(),
    }
}

/// An entity tag from `If-Match`, without quotes.
fn entity_tag(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    Some(v.trim_start_matches("W/").trim_matches('"').to_string())
}

/// Parses a `PUT` body: the endpoint's fabric config as JSON. Errors name the key.
pub fn parse_config(body: &[u8]) -> Result<FabricConfig, Problem> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let problem = Problem::new(
            422,
            "invalid-config",
            "Invalid endpoint config",
            format!(
                "{inner}; the body is the endpoint's fabric config as JSON (docs/guides/fabric-config.md)"
            ),
        );
        if path == "." {
            problem
        } else {
            problem.at(path)
        }
    })
}

async fn put(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = match parse_config(&body) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    // Reads the model: off the async workers.
    let (prep_api, prep_name) = (api.clone(), name.clone());
    let prepared =
        tokio::task::spawn_blocking(move || prep_api.host.prepare(&prep_name, config)).await;
    let prepared = match prepared {
        Ok(Ok(c)) => c,
        Ok(Err(p)) => return p.into_response(),
        Err(e) => {
            return Problem::new(500, "internal", "The daemon failed", e.to_string())
                .into_response();
        }
    };
    // Of the config as this daemon runs it (its own paths), so that clients with different
    // paths of their own see the same ETag for the same endpoint.
    let etag = host::etag_of(&prepared);
    let if_match = entity_tag(&headers, header::IF_MATCH);
    let create_only = entity_tag(&headers, header::IF_NONE_MATCH).is_some_and(|t| t == "*");
    // The deploy runs on its own task: a client that goes away mid-apply must not cut a router
    // start in half; the next apply finds it finished (or cleaned up).
    let task_api = api.clone();
    let task = tokio::spawn(async move {
        let if_match = if_match.filter(|m| m != "*");
        task_api
            .host
            .put(
                &name,
                prepared,
                etag,
                if_match.as_deref(),
                create_only,
                &task_api.stop,
            )
            .await
    });
    match task.await {
        Ok(Ok(Put::Created(view))) => with_etag(StatusCode::CREATED, view),
        Ok(Ok(Put::Replaced(view) | Put::Unchanged(view))) => with_etag(StatusCode::OK, view),
        Ok(Err(p)) => p.into_response(),
        Err(e) => Problem::new(500, "internal", "The daemon failed", e.to_string()).into_response(),
    }
}

async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let if_match = entity_tag(&headers, header::IF_MATCH).filter(|m| m != "*");
    let task_api = api.clone();
    let task_name = name.clone();
    let task =
        tokio::spawn(async move { task_api.host.delete(&task_name, if_match.as_deref()).await });
    match task.await {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => unknown(&name).into_response(),
        Ok(Err(p)) => p.into_response(),
        Err(e) => Problem::new(500, "internal", "The daemon failed", e.to_string()).into_response(),
    }
}

async fn pools(State(api): State<Arc<Api>>) -> Response {
    match api.host.ledger().books() {
        Ok(books) => axum::Json(PoolList {
            pools: books
                .into_iter()
                .map(|(name, book)| PoolView { name, book })
                .collect(),
        })
        .into_response(),
        Err(e) => Problem::new(
            500,
            "ledger",
            "The pool ledger cannot be read",
            e.to_string(),
        )
        .into_response(),
    }
}

async fn keys(State(api): State<Arc<Api>>, Path(name): Path<String>) -> Response {
    match api.host.key_usage(&name).await {
        Ok(list) => axum::Json(list).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn put_key(
    State(api): State<Arc<Api>>,
    Path((name, key)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut de = serde_json::Deserializer::from_slice(&body);
    let spec: KeySpec = match serde_path_to_error::deserialize(&mut de) {
        Ok(s) => s,
        Err(e) => {
            let path = e.path().to_string();
            return Problem::new(
                422,
                "invalid-key",
                "Invalid API key",
                format!(
                    "{}; the body is the key as keys.json holds it (name, sha256, expires_at, rate_limit, monthly_request_quota)",
                    e.into_inner()
                ),
            )
            .at(path)
            .into_response();
        }
    };
    // On its own task, as a deploy is: a client gone mid-call must not cut a reload in half.
    let task_api = api.clone();
    let task = tokio::spawn(async move {
        task_api
            .host
            .put_key(&name, &key, spec, &task_api.stop)
            .await
    });
    match task.await {
        Ok(Ok(KeyPut::Created)) => StatusCode::CREATED.into_response(),
        Ok(Ok(KeyPut::Replaced)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(p)) => p.into_response(),
        Err(e) => Problem::new(500, "internal", "The daemon failed", e.to_string()).into_response(),
    }
}

async fn delete_key(
    State(api): State<Arc<Api>>,
    Path((name, key)): Path<(String, String)>,
) -> Response {
    let task_api = api.clone();
    let task =
        tokio::spawn(async move { task_api.host.delete_key(&name, &key, &task_api.stop).await });
    match task.await {
        Ok(Ok(_)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(p)) => p.into_response(),
        Err(e) => Problem::new(500, "internal", "The daemon failed", e.to_string()).into_response(),
    }
}
