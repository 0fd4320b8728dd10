//! The daemon's join listener: `/v1/join/ENDPOINT/{spec,model,connect}` on the admin API's
//! (TLS) listener is passed to that endpoint's router, which checks the claim itself. A
//! `101 Switching Protocols` from the router turns both legs into one byte pipe, so the joined
//! replica's HTTP/2 runs end to end between the replica and the router. The daemon needs no
//! join token: it only forwards.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gpucap_runtime::join::{MACHINE_HEADER, POOL_HEADER};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The request headers a join carries to the router.
const PASSED: [&str; 5] = [
    "authorization",
    POOL_HEADER,
    MACHINE_HEADER,
    "upgrade",
    "connection",
];

/// Passes a join request to the router at `address` (its loopback listener).
pub async fn forward(address: &str, leaf: &str, mut req: Request) -> Response {
    if !matches!(leaf, "spec" | "model" | "connect") {
        return (StatusCode::NOT_FOUND, "no such join route\n").into_response();
    }
    let unavailable = |why: String| {
        tracing::warn!(%address, error = %why, "cannot pass a join to the router");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the endpoint's router is not answering; retry\n",
        )
            .into_response()
    };
    let stream = match TcpStream::connect(address).await {
        Ok(s) => s,
        Err(e) => return unavailable(e.to_string()),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await {
            Ok(c) => c,
            Err(e) => return unavailable(e.to_string()),
        };
    tokio::spawn(conn.with_upgrades());
    let mut out = hyper::Request::builder()
        .method(req.method().clone())
        .uri(format!("/fabric/join/{leaf}"))
        .header(header::HOST, address);
    for name in PASSED {
        for value in req.headers().get_all(name) {
            out = out.header(name, value);
        }
    }
    let Ok(out) = out.body(Body::empty()) else {
        return (StatusCode::BAD_REQUEST, "unusable join request\n").into_response();
    };
    let client_side = hyper::upgrade::on(&mut req);
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return unavailable(e.to_string()),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let router_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, router) = match tokio::try_join!(client_side, router_side) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "a join could not be turned around");
                    return;
                }
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(router))
                    .await;
        });
    }
    resp.map(Body::new)
}
