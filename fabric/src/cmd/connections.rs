//! A serving thread's open connections, for a graceful stop: each is asked to finish the request
//! it is answering and close, and the stop waits until every one has.
//!
//! Why not hyper-util's `GracefulShutdown` (or axum-server's handle): both poll a shared
//! `Notify` every time a connection is polled, which takes a lock; with a connection polled two
//! or three times per forwarded request, that was a tenth of the router's user CPU. Here a poll
//! reads one atomic flag, and a connection's waker is stored only when it changes (for a tokio
//! task, once). And the public listener's connections are not all hyper's to close: they start
//! in the front door's own loop ([`Served`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use gpucap_fabric::front::Served;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

/// A connection that can be asked to close once it has answered the request in progress.
pub trait Graceful: Future + Unpin {
    /// Asks it to close once idle.
    fn close_when_answered(&mut self);
}

impl<S> Graceful for Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn close_when_answered(&mut self) {
        Served::close_when_answered(self);
    }
}

/// The open connections of one serving thread.
#[derive(Default)]
pub struct Connections {
    stopping: AtomicBool,
    open: AtomicUsize,
    next_id: AtomicU64,
    wakers: Mutex<HashMap<u64, Waker>>,
    all_closed: Notify,
}

impl Connections {
    /// Counts a connection open from now (its TLS handshake included) until the returned
    /// guard, or the connection it goes on to [`Open::watch`], is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open {
            connections: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Asks every connection to close once its request in progress is answered, and waits until
    /// all have closed.
    pub async fn close_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, w)| w)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
        loop {
            let closed = self.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open connection's place in the count.
pub struct Open {
    connections: Arc<Connections>,
    id: u64,
}

impl Open {
    /// `connection`, closed gracefully when the thread stops.
    pub fn watch<C: Graceful>(self, connection: C) -> Watched<C> {
        Watched {
            connection,
            open: self,
            waker: None,
            asked: false,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        if self.connections.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.all_closed.notify_waiters();
        }
    }
}

/// A connection that closes gracefully when its thread stops.
pub struct Watched<C> {
    connection: C,
    open: Open,
    /// The waker last stored for the stop to wake.
    waker: Option<Waker>,
    /// Whether the connection has been asked to close.
    asked: bool,
}

impl<C: Graceful> Future for Watched<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        if !this.asked {
            let connections = &this.open.connections;
            if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                connections.lock().insert(this.open.id, cx.waker().clone());
                this.waker = Some(cx.waker().clone());
            }
            // Read after the waker is stored: a stop that came before is seen here, one that
            // comes after wakes the stored waker.
            if connections.stopping() {
                this.asked = true;
                this.connection.close_when_answered();
            }
        }
        Pin::new(&mut this.connection).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A hyper connection, closed the way hyper closes it.
    struct Hyper<C>(Pin<Box<C>>);

    impl<C: hyper_util::server::graceful::GracefulConnection> Future for Hyper<C> {
        type Output = C::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
            self.0.as_mut().poll(cx)
        }
    }

    impl<C: hyper_util::server::graceful::GracefulConnection> Graceful for Hyper<C> {
        fn close_when_answered(&mut self) {
            self.0.as_mut().graceful_shutdown();
        }
    }

    #[tokio::test]
    async fn the_stop_waits_for_every_open_connection_and_an_idle_one_closes_at_once() {
        let connections = Arc::new(Connections::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = {
            let connections = connections.clone();
            tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
                });
                let connection = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .into_owned();
                connections.open().watch(Hyper(Box::pin(connection))).await
            })
        };
        // A handshake in progress is counted too.
        let handshake = connections.open();
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stop = {
            let connections = connections.clone();
            tokio::spawn(async move { connections.close_all().await })
        };
        // The idle connection closes (one that has not yet sent a byte ends "cancelled"); the
        // stop still waits for the handshake.
        let _ = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the idle connection did not close")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stop.is_finished());
        drop(handshake);
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("the stop did not end")
            .unwrap();
    }
}
