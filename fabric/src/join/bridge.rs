//! A joined replica's connection, turned around: the router speaks HTTP/2 as the client over the
//! connection the replica opened, and serves it on a loopback port so that the rest of the router
//! (routing, health checks, metric scrapes) reaches a joined replica exactly as it reaches one
//! it started itself. HTTP/2 pings find a dead connection within seconds; then the loopback port
//! closes and the replica counts as gone.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often an idle connection is pinged, and how long a ping may go unanswered.
const KEEPALIVE: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(4);

/// A joined replica's connection and the loopback port that reaches it.
pub struct Bridge {
    address: String,
    closed: CancellationToken,
    in_flight: Arc<AtomicUsize>,
}

impl Bridge {
    /// Speaks HTTP/2 over `io` (the replica answers) and serves it on a fresh loopback port.
    pub async fn open(io: hyper::upgrade::Upgraded) -> Result<Bridge, String> {
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake::<_, Incoming>(io)
            .await
            .map_err(|e| format!("HTTP/2 with the replica: {e}"))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot open a loopback port: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let closed = CancellationToken::new();
        let on_end = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = connection => {
                    if let Err(e) = r {
                        tracing::info!(error = %e, "joined replica's connection ended");
                    }
                }
                _ = on_end.cancelled() => {}
            }
            on_end.cancel();
        });
        let in_flight = Arc::new(AtomicUsize::new(0));
        tokio::spawn(accept(listener, sender, closed.clone(), in_flight.clone()));
        Ok(Bridge {
            address,
            closed,
            in_flight,
        })
    }

    /// The loopback `host:port` that reaches the replica.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Resolves once the connection is gone.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    /// Closes the connection now.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Waits (at most `grace`) for the requests in flight to be answered, then closes.
    pub async fn drain(&self, grace: Duration) {
        let until = Instant::now() + grace;
        while self.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.close();
    }
}

/// Serves the loopback port until the connection closes: every request is passed to the replica.
async fn accept(
    listener: TcpListener,
    sender: SendRequest<Incoming>,
    closed: CancellationToken,
    in_flight: Arc<AtomicUsize>,
) {
    loop {
        let stream = tokio::select! {
            _ = closed.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "loopback accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let sender = sender.clone();
        let in_flight = in_flight.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut sender = sender.clone();
                let in_flight = in_flight.clone();
                async move {
                    in_flight.fetch_add(1, Ordering::AcqRel);
                    let answer = pass(&mut sender, req).await;
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    Ok::<_, Infallible>(answer)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = closed.cancelled() => {}
            }
        });
    }
}

/// One request over the replica's connection; a broken connection is a `502`, which the router
/// treats as a replica fault (and retries elsewhere).
async fn pass(sender: &mut SendRequest<Incoming>, req: Request<Incoming>) -> Answer {
    use http_body_util::Either;
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match format!("http://replica{path}").parse() {
        Ok(u) => u,
        Err(_) => return bad_gateway("unusable request path"),
    };
    parts.version = hyper::Version::HTTP_2;
    parts.headers.remove(hyper::header::HOST);
    parts.headers.remove(hyper::header::CONNECTION);
    if sender.ready().await.is_err() {
        return bad_gateway("the joined replica's connection is closed");
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => resp.map(Either::Left),
        Err(e) => bad_gateway(&format!("the joined replica did not answer: {e}")),
    }
}

type Answer = Response<http_body_util::Either<Incoming, http_body_util::Full<bytes::Bytes>>>;

fn bad_gateway(message: &str) -> Answer {
    let mut resp = Response::new(http_body_util::Either::Right(http_body_util::Full::new(
        bytes::Bytes::from(message.to_string()),
    )));
    *resp.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    resp
}
