//! Start-up and shutdown. /readyz answers 503 until the server serves; on SIGTERM or ctrl-c it
//! turns 503 again at once while requests are still served for the drain period (so load
//! balancers take the instance out), then the listener closes and in-flight requests get a
//! bounded time to finish. Nothing else makes /readyz fail.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Shared between the server and its handlers: whether start-up has finished, and whether the
/// process is draining.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    started: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl Lifecycle {
    pub fn finish_starting(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Resolves on SIGTERM or ctrl-c (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received ctrl-c"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
