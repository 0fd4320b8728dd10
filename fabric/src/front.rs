//! The public listener's front door: inference requests go straight to the
//! [router](crate::router)'s forwarding; every other request goes through its axum routes.
//!
//! Why a door before the routes: an inference request is what the listener mostly carries, and
//! the route table cost it more than the request itself needs — matching, the path's
//! parameters and the connection's address stored in the request's extensions (a map
//! allocated and freed per request), about a tenth of the router's CPU per request. The fast
//! path is taken only for paths the routes would read the same way (no percent-encoding); the
//! rest, joins and errors included, meet the routes unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use axum::response::Response;
use hyper::body::Incoming;
use tower_service::Service;

use gpucap_runtime::protocol::ModelPath;

use crate::router::{RouterState, forward_inference, router};

/// Makes a [`Door`] for each accepted connection.
#[derive(Clone)]
pub struct Front {
    state: Arc<RouterState>,
    routes: Router,
}

impl Front {
    /// The public listener's service over `state`.
    pub fn new(state: Arc<RouterState>) -> Front {
        Front {
            routes: router(state.clone()),
            state,
        }
    }
}

impl Front {
    /// The service of a connection from `peer`.
    pub fn door(&self, peer: SocketAddr) -> Door {
        Door(Arc::new(Connection {
            state: self.state.clone(),
            routes: self.routes.clone(),
            peer,
        }))
    }
}

/// One connection's service; cloned for every request it serves, so one reference count.
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
    let (name, version) = match rest.split_once("/versions/") {
        Some((name, version)) => (name, Some(version)),
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
            "/v2/models/digits/infer/",
        ] {
            assert_eq!(target(path), None, "{path}");
        }
    }
}
