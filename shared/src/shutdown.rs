//! Graceful shutdown: one cancellation token, tripped by SIGTERM or Ctrl-C.

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or SIGINT. Every service's `run` takes one.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trip = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        trip.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
