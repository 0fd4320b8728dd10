//! The router's join routes, `/fabric/join/{spec,model,connect}`. They answer only peers on
//! loopback: replicas on other machines reach them through the fabric daemon's TLS listener,
//! which forwards `/v1/join/ENDPOINT/…` here, so a token never crosses a network in clear.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gpucap_runtime::join::{MACHINE_HEADER, POOL_HEADER, UPGRADE_PROTOCOL};

use super::bridge::Bridge;
use super::{Claim, JoinHub, Offer};

/// The join routes over `hub`.
pub fn routes<S: Clone + Send + Sync + 'static>(hub: Arc<JoinHub>) -> Router<S> {
    Router::new()
        .route("/fabric/join/spec", get(spec))
        .route("/fabric/join/model", get(model))
        .route("/fabric/join/connect", post(connect))
        .with_state(hub)
}

/// The same refusal for every reason: the caller learns nothing it could probe with.
fn refused() -> Response {
    (StatusCode::FORBIDDEN, "join refused\n").into_response()
}

/// The claim in the headers, from a loopback peer; `None` refuses.
fn claim(peer: SocketAddr, headers: &HeaderMap) -> Option<Claim> {
    if !peer.ip().is_loopback() {
        tracing::warn!(%peer, "join refused: joins come through the fabric daemon's TLS listener, not from another host");
        return None;
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Some(Claim {
        token: text(header::AUTHORIZATION.as_str())?
            .strip_prefix("Bearer ")?
            .to_string(),
        pool: text(POOL_HEADER)?,
        machine: text(MACHINE_HEADER)?,
    })
}

async fn admitted(hub: &JoinHub, peer: SocketAddr, headers: &HeaderMap) -> Option<Claim> {
    let claim = claim(peer, headers)?;
    hub.admit(&claim).await.ok().map(|()| claim)
}

/// What an admitted claim is offered; `None` refuses.
async fn admitted_offer(hub: &JoinHub, peer: SocketAddr, headers: &HeaderMap) -> Option<Offer> {
    admitted(hub, peer, headers).await?;
    hub.offer()
}

async fn spec(
    State(hub): State<Arc<JoinHub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    match admitted_offer(&hub, peer, &headers).await {
        Some(offer) => axum::Json(offer.spec).into_response(),
        None => refused(),
    }
}

async fn model(
    State(hub): State<Arc<JoinHub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Some(offer) = admitted_offer(&hub, peer, &headers).await else {
        return refused();
    };
    // Streamed from disk: instances joining at once must not each hold a model's bytes in the
    // router's memory. The replica checks them against the digest in the spec.
    let opened = match tokio::fs::File::open(&offer.model_path).await {
        Ok(file) => file.metadata().await.map(|m| (file, m.len())),
        Err(e) => Err(e),
    };
    match opened {
        Ok((file, len)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(path = %offer.model_path.display(), error = %e, "cannot read the model for a joining replica");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the model cannot be read\n",
            )
                .into_response()
        }
    }
}

async fn connect(
    State(hub): State<Arc<JoinHub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let wants_upgrade = req.headers().get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes())
    });
    let Some(claim) = admitted(&hub, peer, req.headers()).await else {
        return refused();
    };
    if !wants_upgrade {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, UPGRADE_PROTOCOL)],
            "connect needs Upgrade: gpucap-join/1\n",
        )
            .into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(machine = %claim.machine, error = %e, "join connection could not be turned around");
                return;
            }
        };
        match Bridge::open(io).await {
            Ok(bridge) => hub.enter(&claim.pool, &claim.machine, bridge),
            Err(e) => {
                tracing::warn!(machine = %claim.machine, error = %e, "joined replica dropped")
            }
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, UPGRADE_PROTOCOL),
        ],
    )
        .into_response()
}
