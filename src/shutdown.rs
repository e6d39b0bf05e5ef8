//! The one way every long-running mode stops: SIGTERM (the kubelet, systemd) or SIGINT (Ctrl-C).

use tracing::info;

/// Completes when the process is asked to stop, naming the signal in the log.
pub async fn requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let signal = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        () = terminate => "SIGTERM",
    };
    info!("{signal}: shutting down");
}
