//! Serving: a unix socket, TLS with the pinned client certificate (or none in `--debug`), the
//! provider, controller, stdio and health services, and the handshake line on stdout.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::provider::Provider;
use crate::wire::plugin;
use crate::wire::proto::provider_server::ProviderServer;
use crate::wire::server::ProviderService;
use crate::wire::{handshake, tls};

/// How the provider was started.
pub enum Mode {
    /// By Terraform: TLS pinned to Terraform's client certificate (PEM).
    Plugin {
        /// `PLUGIN_CLIENT_CERT`.
        client_cert_pem: String,
    },
    /// By a developer: no TLS; prints `TF_REATTACH_PROVIDERS` and serves until Ctrl-C.
    Debug,
}

/// The provider's registry address, as `TF_REATTACH_PROVIDERS` names it.
pub const PROVIDER_ADDRESS: &str = "registry.terraform.io/gpucap/gpucap";

/// Largest message accepted: plans of big configurations can be large.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Why the plugin server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket, its directory, signals or stdout failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// AutoMTLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The gRPC server failed.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until Terraform calls `GRPCController.Shutdown` (or Ctrl-C in debug mode).
pub async fn run(provider: Arc<Provider>, mode: Mode) -> Result<(), ServeError> {
    let socket_dir = match std::env::var_os("PLUGIN_UNIX_SOCKET_DIR") {
        Some(dir) => tempfile::Builder::new().prefix("plugin").tempdir_in(dir)?,
        None => tempfile::Builder::new().prefix("plugin").tempdir()?,
    };
    let socket = socket_dir.path().join("gpucap.sock");
    let listener = UnixListener::bind(&socket)?;

    let shutdown = CancellationToken::new();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;
    let router = Server::builder()
        .add_service(health_service)
        .add_service(
            ProviderServer::new(ProviderService::new(provider))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(plugin::grpc_controller_server::GrpcControllerServer::new(
            Controller {
                shutdown: shutdown.clone(),
            },
        ))
        .add_service(plugin::grpc_stdio_server::GrpcStdioServer::new(Stdio));
    let stop = {
        let shutdown = shutdown.clone();
        async move { shutdown.cancelled().await }
    };

    match mode {
        Mode::Plugin { client_cert_pem } => {
            let tls = tls::server_tls(&client_cert_pem)?;
            ignore_interrupts(interrupts()?);
            announce(&handshake::handshake_line(&socket, Some(&tls.cert_base64)))?;
            let incoming = tls_incoming(listener, tokio_rustls::TlsAcceptor::from(tls.config));
            let serve = router.serve_with_incoming_shutdown(incoming, stop);
            finish(serve, shutdown).await
        }
        Mode::Debug => {
            let reattach = serde_json::json!({
                PROVIDER_ADDRESS: {
                    "Protocol": "grpc",
                    "ProtocolVersion": handshake::APP_PROTOCOL_VERSION,
                    "Pid": std::process::id(),
                    "Test": true,
                    "Addr": {"Network": "unix", "String": socket.display().to_string()},
                }
            });
            let mut interrupts = interrupts()?;
            announce(&format!(
                "Provider started in debug mode. To attach Terraform, set this in the shell that runs it:\n\n\
                 \tTF_REATTACH_PROVIDERS='{reattach}'\n"
            ))?;
            let interrupted = shutdown.clone();
            tokio::spawn(async move {
                interrupts.recv().await;
                interrupted.cancel();
            });
            let serve =
                router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop);
            finish(serve, shutdown).await
        }
    }
}

/// Writes a line to stdout and flushes it: Terraform reads the handshake as soon as it appears.
fn announce(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// SIGINT, caught from now on. Registered before the process announces itself, so that an
/// interrupt right after the announcement is neither lost (when the process was started with
/// SIGINT ignored, as background jobs are) nor fatal.
fn interrupts() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
}

/// Terraform forwards Ctrl-C as `Stop`; the provider itself must not die of the terminal's SIGINT.
fn ignore_interrupts(mut sigint: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        while sigint.recv().await.is_some() {
            tracing::debug!("ignoring SIGINT; Terraform sends Stop instead");
        }
    });
}

/// Waits for the server; once shutdown was requested, gives in-flight answers a moment, no more.
async fn finish(
    serve: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    tokio::pin!(serve);
    tokio::select! {
        result = &mut serve => result.map_err(Into::into),
        _ = async { shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(2)).await } => Ok(()),
    }
}

/// TLS handshakes run in their own tasks so a slow or hostile client cannot hold up the others; a
/// connection without the pinned certificate is dropped and logged.
fn tls_incoming(
    listener: UnixListener,
    acceptor: tokio_rustls::TlsAcceptor,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::UnixStream>, std::io::Error>>
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match acceptor.accept(sock).await {
                    Ok(stream) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "refused a connection without Terraform's client certificate")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// go-plugin's controller: `Shutdown` ends the process.
struct Controller {
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl plugin::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _: Request<plugin::Empty>) -> Result<Response<plugin::Empty>, Status> {
        tracing::debug!("GRPCController.Shutdown");
        self.shutdown.cancel();
        Ok(Response::new(plugin::Empty {}))
    }
}

/// go-plugin's stdio forwarding. The provider never writes to stdout after the handshake and logs
/// go straight to stderr, so the stream stays open and silent.
struct Stdio;

#[tonic::async_trait]
impl plugin::grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<plugin::StdioData, Status>> + Send>>;

    async fn stream_stdio(
        &self,
        _: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}
