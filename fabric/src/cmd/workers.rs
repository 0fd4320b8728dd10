//! The public listener's serving threads. Each thread runs a single-threaded runtime and accepts
//! on a socket of its own, bound with `SO_REUSEPORT` to the same address, so the kernel spreads
//! connections over the threads and a request is answered by the thread that accepted it, its
//! connection to the replica included ([`gpucap_fabric::upstream`] keeps a pool per thread).
//! With one shared multi-threaded runtime, a request crossed threads twice (the client's
//! connection task and the server's ran on different workers): two wake-ups per request through
//! the kernel, which was most of what the router cost beyond nginx.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::thread::JoinHandle;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use gpucap_fabric::front::Front;
use socket2::{Domain, Socket, Type};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connections::Connections;

/// How many connections wait to be accepted on each thread's socket.
const BACKLOG: i32 = 1024;

/// How often each serving thread's timer ticks (see [`keep_the_timer_near`]).
const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long to wait before accepting again after a failed accept (out of file descriptors).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// `count` listening sockets on `address` (`host:port`; port 0 picks one for all of them).
pub fn bind(address: &str, count: usize) -> anyhow::Result<Vec<TcpListener>> {
    let wanted = address
        .to_socket_addrs()
        .with_context(|| format!("endpoint.listen: {address} is not a host:port"))?
        .next()
        .with_context(|| format!("endpoint.listen: {address} resolves to no address"))?;
    // A port taken by anyone else is refused here, as a plain bind refuses it: with SO_REUSEPORT
    // alone, a stale router of the same user on that port would silently share the traffic.
    let probe = TcpListener::bind(wanted)
        .with_context(|| format!("endpoint.listen: cannot listen on {address}"))?;
    let at = if wanted.port() == 0 {
        probe.local_addr()?
    } else {
        wanted
    };
    drop(probe);
    (0..count.max(1))
        .map(|_| {
            reuse_port_listener(at)
                .with_context(|| format!("endpoint.listen: cannot listen on {at}"))
        })
        .collect()
}

fn reuse_port_listener(at: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&at.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The serving threads.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    /// Each thread's server's outcome, as it ends.
    served: mpsc::UnboundedReceiver<std::io::Result<()>>,
    release: CancellationToken,
}

impl Workers {
    /// Serves `front` on each listener from a thread of its own, over TLS when `tls` is set (its
    /// reloads reach every thread).
    pub fn start(
        listeners: Vec<TcpListener>,
        front: Front,
        tls: Option<RustlsConfig>,
    ) -> anyhow::Result<Workers> {
        let release = CancellationToken::new();
        let (done, served) = mpsc::unbounded_channel();
        let mut workers = Workers {
            threads: Vec::new(),
            stop: CancellationToken::new(),
            served,
            release: release.clone(),
        };
        for (n, listener) in listeners.into_iter().enumerate() {
            // Sockets and timers only: signals and child processes are the main runtime's.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .context("cannot start a serving thread's runtime")?;
            let (front, tls, release, stop, done) = (
                front.clone(),
                tls.clone(),
                release.clone(),
                workers.stop.clone(),
                done.clone(),
            );
            let thread = std::thread::Builder::new()
                .name(format!("gpucap-serve-{n}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        tokio::spawn(keep_the_timer_near());
                        let _ = done.send(serve(listener, front, tls, stop).await);
                        // Dropped now: once every thread sent or died, the receiver sees the end.
                        drop(done);
                        // Joined replicas' connections (upgraded from requests this thread
                        // accepted) live on this runtime: it runs until the replicas are gone.
                        release.cancelled().await;
                    });
                })
                .context("cannot start a serving thread")?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// A handle that starts the graceful shutdown of every thread's server: no new connections,
    /// every accepted request answered.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Waits until every thread's server stopped (after the shutdown, once every accepted
    /// request was answered); the first error, if any. A server that fails shuts the others
    /// down: the router stops whole rather than serve on with fewer threads, unnoticed.
    pub async fn served(&mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        for _ in 0..self.threads.len() {
            let outcome = self.served.recv().await.unwrap_or_else(|| {
                Err(std::io::Error::other("a serving thread ended unexpectedly"))
            });
            if let Err(e) = outcome
                && result.is_ok()
            {
                tracing::error!(error = %e, "a serving thread failed; stopping the others");
                self.shutdown_handle().shut_down();
                result = Err(e);
            }
        }
        result
    }

    /// Lets the threads end (their joined replicas' connections with them) and waits for them.
    pub fn finish(self) {
        self.release.cancel();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts the graceful shutdown of every serving thread.
#[derive(Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// No new connections; every accepted request is answered, then the servers stop.
    pub fn shut_down(&self) {
        self.0.cancel();
    }
}

/// Keeps a timer due within [`TIMER_TICK`]. Tokio wakes its driver (a write to an eventfd, and
/// one more turn of the loop) whenever a timer is set earlier than the driver's next wake-up:
/// with no other timer, every request's timeout was one, two system calls per request.
async fn keep_the_timer_near() {
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Accepts on `listener` until `stop`, serving each connection (HTTP/1.1, or HTTP/2 where the
/// client starts with it; over TLS when `tls` is set, with whatever certificate it holds at the
/// time) from a task of this thread; then stops each connection once its request in progress is
/// answered, and returns when every connection has closed. A joined replica's connection leaves
/// the count when it is upgraded: it ends with the replica.
///
/// Served by the [front door](gpucap_fabric::front) rather than through `axum-server`, whose
/// per-request layers and shutdown watch cost a sixth of the router's user CPU per forwarded
/// request.
async fn serve(
    listener: TcpListener,
    front: Front,
    tls: Option<RustlsConfig>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let connections = std::sync::Arc::new(Connections::default());
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // No Nagle: answers are written whole, and joined replicas' HTTP/2 frames arrive on
        // these connections too.
        let _ = stream.set_nodelay(true);
        let open = connections.open();
        match &tls {
            None => {
                tokio::spawn(open.watch(front.serve(stream, peer)));
            }
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.get_inner());
                let front = front.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    open.watch(front.serve(stream, peer)).await;
                });
            }
        }
    }
    drop(listener);
    connections.close_all().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn every_thread_listens_on_the_one_port_picked() {
        let listeners = bind("127.0.0.1:0", 3).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert!(
            ports[0] != 0 && ports.iter().all(|p| *p == ports[0]),
            "{ports:?}"
        );
        // A connection to the port lands on one of them.
        let mut client = std::net::TcpStream::connect(listeners[0].local_addr().unwrap()).unwrap();
        client.write_all(b"x").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let accepted = loop {
            if let Some((mut conn, _)) = listeners.iter().find_map(|l| l.accept().ok()) {
                break conn.read(&mut [0u8; 1]).unwrap_or(0);
            }
            assert!(std::time::Instant::now() < deadline, "no listener accepted");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(accepted, 1);
    }

    #[test]
    fn a_port_someone_else_listens_on_is_refused_naming_the_setting() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let e = bind(&address, 2).unwrap_err();
        assert!(
            format!("{e:#}").starts_with(&format!("endpoint.listen: cannot listen on {address}")),
            "{e:#}"
        );
        // Nor may a second router of the same user share it.
        let first = bind("127.0.0.1:0", 1).unwrap();
        let again = first[0].local_addr().unwrap().to_string();
        assert!(bind(&again, 1).is_err());
    }

    #[test]
    fn an_address_that_is_not_host_port_is_refused() {
        let e = bind("localhost", 1).unwrap_err();
        assert!(
            format!("{e:#}").contains("endpoint.listen: localhost is not a host:port"),
            "{e:#}"
        );
    }
}
