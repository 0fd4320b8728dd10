//! The public listener's front door: inference requests go straight to the
//! [router](crate::router)'s forwarding; every other request goes through its axum routes.
//!
//! Why a door before the routes: an inference request is what the listener mostly carries, and
//! the route table cost it more than the request itself needs — matching, the path's
//! parameters and the connection's address stored in the request's extensions (a map
//! allocated and freed per request), about a tenth of the router's CPU per request. The fast
//! path is taken only for paths the routes would read the same way (no percent-encoding); the
//! rest, joins and errors included, meet the routes unchanged.
//!
//! A connection starts in the door's own [HTTP/1.1 loop](http1), which serves inference
//! requests; at the first request it leaves to hyper, hyper serves the connection from there.

pub mod http1;
mod prefixed;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

use gpucap_runtime::protocol::ModelPath;

use crate::router::{RouterState, forward_inference, router};

use http1::Ended;
use prefixed::Prefixed;

/// Serves the public listener's connections.
#[derive(Clone)]
pub struct Front {
    state: Arc<RouterState>,
    routes: Router,
    hyper: Arc<auto::Builder<TokioExecutor>>,
}

impl Front {
    /// The public listener's service over `state`.
    pub fn new(state: Arc<RouterState>) -> Front {
        let mut hyper = auto::Builder::new(TokioExecutor::new());
        // No limit on the wait for a request's head: an idle keep-alive connection is the
        // client's to keep (hyper's default of 30 s would need a timer on every connection).
        hyper.http1().header_read_timeout(None);
        Front {
            routes: router(state.clone()),
            state,
            hyper: Arc::new(hyper),
        }
    }

    /// Serves `stream`, a connection from `peer` (HTTP/1.1, or HTTP/2 where the client starts
    /// with it): the returned future ends when the connection does, or when it is upgraded.
    pub fn serve<S>(&self, stream: S, peer: SocketAddr) -> Served<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let asked = Arc::new(AtomicBool::new(false));
        Served {
            stage: Stage::Loop(Box::pin(http1::serve(
                stream,
                self.state.clone(),
                asked.clone(),
            ))),
            asked,
            front: self.clone(),
            peer,
        }
    }

    /// The service of a connection from `peer`, for hyper.
    fn door(&self, peer: SocketAddr) -> Door {
        Door(Arc::new(Connection {
            state: self.state.clone(),
            routes: self.routes.clone(),
            peer,
        }))
    }
}

/// A connection being served: by the [HTTP/1.1 loop](http1) until a request comes that is
/// hyper's to serve, then by hyper.
pub struct Served<S> {
    stage: Stage<S>,
    /// Set when the connection is asked to close once its request in progress is answered.
    asked: Arc<AtomicBool>,
    front: Front,
    peer: SocketAddr,
}

type Loop<S> = Pin<Box<dyn Future<Output = std::io::Result<Ended<S>>> + Send>>;
type HyperConnection<S> = auto::UpgradeableConnection<
    'static,
    TokioIo<Prefixed<S>>,
    TowerToHyperService<Door>,
    TokioExecutor,
>;

enum Stage<S> {
    Loop(Loop<S>),
    Hyper(Pin<Box<HyperConnection<S>>>),
}

impl<S> Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Asks the connection to close once the request it is answering (if any) is answered.
    pub fn close_when_answered(&mut self) {
        self.asked.store(true, Ordering::Relaxed);
        if let Stage::Hyper(connection) = &mut self.stage {
            connection.as_mut().graceful_shutdown();
        }
    }
}

impl<S> Future for Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Loop(serving) => match ready!(serving.as_mut().poll(cx)) {
                    Ok(Ended::Closed) => return Poll::Ready(()),
                    Err(e) => {
                        tracing::debug!(peer = %this.peer, error = %e, "a connection failed");
                        return Poll::Ready(());
                    }
                    Ok(Ended::HandOver(stream, read)) => {
                        let io = TokioIo::new(Prefixed::new(read, stream));
                        let service = TowerToHyperService::new(this.front.door(this.peer));
                        let mut connection = Box::pin(
                            this.front
                                .hyper
                                .serve_connection_with_upgrades(io, service)
                                .into_owned(),
                        );
                        if this.asked.load(Ordering::Relaxed) {
                            connection.as_mut().graceful_shutdown();
                        }
                        this.stage = Stage::Hyper(connection);
                    }
                },
                Stage::Hyper(connection) => {
                    return connection.as_mut().poll(cx).map(|served| {
                        if let Err(e) = served {
                            tracing::debug!(peer = %this.peer, error = %e, "a connection failed");
                        }
                    });
                }
            }
        }
    }
}

/// One connection's service for hyper; cloned for every request it serves, so one reference
/// count.
#[derive(Clone)]
pub struct Door(Arc<Connection>);

/// What a connection's requests are served with.
struct Connection {
    state: Arc<RouterState>,
    routes: Router,
    peer: SocketAddr,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request<Incoming>> for Door {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Answer {
        if request.method() == Method::POST
            && let Some(model) = inference_target(request.uri().path())
        {
            let state = self.0.state.clone();
            return Box::pin(async move {
                Ok(forward_inference(state, model, request.map(Body::new)).await)
            });
        }
        // The join routes ask who connected.
        request.extensions_mut().insert(ConnectInfo(self.0.peer));
        Box::pin(self.0.routes.clone().call(request))
    }
}

/// The model an inference path names (`/v2/models/{name}[/versions/{version}]/infer`), when
/// the routes would read it the same: no segment empty or percent-encoded.
fn inference_target(path: &str) -> Option<ModelPath> {
    let rest = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    // Split at the first '/' (a name has none): a search for "/versions/" cost more than the
    // rest of the path's reading.
    let (name, version) = match rest.split_once('/') {
        Some((name, version)) => (name, Some(version.strip_prefix("versions/")?)),
        None => (rest, None),
    };
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
    if !plain(name) || !version.is_none_or(plain) {
        return None;
    }
    Some(ModelPath {
        name: name.to_string(),
        version: version.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Option<(String, Option<String>)> {
        inference_target(path).map(|m| (m.name, m.version))
    }

    #[test]
    fn inference_paths_name_the_model_and_version_as_the_routes_would() {
        assert_eq!(
            target("/v2/models/digits/infer"),
            Some(("digits".into(), None))
        );
        assert_eq!(
            target("/v2/models/digits/versions/2/infer"),
            Some(("digits".into(), Some("2".into())))
        );
        // Left to the routes: other routes, empty or encoded segments, deeper paths.
        for path in [
            "/v2/models/digits",
            "/v2/models/digits/ready",
            "/v2/models//infer",
            "/v2/models/dig%20its/infer",
            "/v2/models/a/b/infer",
            "/v2/models/a/versions//infer",
            "/v2/models/a/versions/1/2/infer",
            "/v2/models/a/b/versions/1/infer",
            "/v2/models/a/version/1/infer",
            "/v2/models/digits/infer/",
        ] {
            assert_eq!(target(path), None, "{path}");
        }
    }
}
