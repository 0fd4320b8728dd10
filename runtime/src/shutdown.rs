//! Waiting for the signals that end a server: SIGTERM (how process managers and the fabric stop
//! replicas) and SIGINT (Ctrl-C). The runtime's and the fabric's `serve` both drain on it.

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
