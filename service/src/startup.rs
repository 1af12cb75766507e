//! Building and running the application. Build and run are separate, so that tests can bind
//! port 0, read the real address, then serve.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;

use crate::{
    clock::{Clock, SystemClock},
    config::Settings,
    database_check::{self, DatabaseStatus},
    lifecycle::{Lifecycle, shutdown_signal},
    routes,
    server::{self, ConnectionLimits},
    state::AppState,
    store::Store,
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot connect to the database named by DATABASE_URL ({url})")]
    Connect { url: String, source: sea_orm::DbErr },
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sea_orm::DbErr),
    #[error("cannot listen on {variable} {addr}")]
    Bind {
        variable: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("requests were still in flight after SHUTDOWN_TIMEOUT ({})", humantime::format_duration(*.0))]
    ShutdownTimedOut(Duration),
}

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    state: AppState,
    drain_period: Duration,
    shutdown_timeout: Duration,
    connection_limits: ConnectionLimits,
}

impl Application {
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Connects to the database, applies migrations unless MIGRATE_ON_START=false, and binds
    /// the listener.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let store = connect(settings, !settings.migrate_on_start).await?;
        if settings.migrate_on_start {
            store.migrate().await.map_err(StartupError::Migrate)?;
            tracing::info!("database migrations applied");
        }
        let (listener, local_addr) = bind("LISTEN_ADDR", settings.listen_addr).await?;
        let (metrics_listener, metrics_addr) = bind("METRICS_ADDR", settings.metrics_addr).await?;
        let state = AppState {
            store,
            clock,
            lifecycle: Lifecycle::default(),
            database: DatabaseStatus::default(),
            database_check_timeout: settings.database_acquire_timeout,
            request_timeout: settings.request_timeout,
        };
        Ok(Self {
            listener,
            local_addr,
            metrics_listener,
            metrics_addr,
            state,
            drain_period: settings.drain_period,
            shutdown_timeout: settings.shutdown_timeout,
            connection_limits: settings.connection_limits(),
        })
    }

    /// The address actually bound (the port is chosen by the system when LISTEN_ADDR ends in :0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address serving GET /metrics.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves until SIGTERM or ctrl-c, then drains and stops (see [`Application::run_until`]).
    pub async fn run_until_stopped(self) -> Result<(), ServeError> {
        self.run_until(shutdown_signal()).await
    }

    /// Checks the database in the background and serves until `stop` resolves (/readyz answers
    /// 200 from the start, whatever the database's state); then /readyz answers 503 while
    /// requests are still served for DRAIN_PERIOD; then the listener closes and in-flight
    /// requests have SHUTDOWN_TIMEOUT to finish.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Self {
            listener,
            metrics_listener,
            state,
            drain_period,
            shutdown_timeout,
            connection_limits,
            ..
        } = self;
        let lifecycle = state.lifecycle.clone();
        let serving = state.lifecycle.clone();
        let checking_database = tokio::spawn(database_check::watch(
            state.store.clone(),
            state.database.clone(),
            state.database_check_timeout,
        ));
        // Scrapes go on until the API has stopped; then the metrics server closes too.
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::serve(
            metrics_listener,
            routes::metrics_router(state.clone()),
            connection_limits,
            async move {
                let _ = metrics_stopped.await;
            },
        ));
        let app = routes::router(state);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            stop.await;
            lifecycle.start_draining();
            tracing::info!(drain_period = %humantime::format_duration(drain_period), "draining: /readyz now answers 503");
            tokio::time::sleep(drain_period).await;
            tracing::info!("drain period over: closing the listener, finishing in-flight requests");
            let _ = drained_tx.send(());
        };
        let server = server::serve(listener, app, connection_limits, graceful);
        tokio::pin!(server);
        // Start-up is over: the listener bound in `build` is served from the first poll below.
        serving.finish_starting();
        // The server may finish in the same instant the drain ends (nothing in flight): either
        // branch can win then, and both end in "stopped".
        let outcome = tokio::select! {
            () = &mut server => Ok(()),
            _ = drained_rx => tokio::time::timeout(shutdown_timeout, server)
                .await
                .map_err(|_| ServeError::ShutdownTimedOut(shutdown_timeout)),
        };
        let _ = metrics_stop.send(());
        checking_database.abort();
        outcome?;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn bind(
    variable: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartupError> {
    let refused = |source| StartupError::Bind {
        variable,
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(refused)?;
    let local_addr = listener.local_addr().map_err(refused)?;
    Ok((listener, local_addr))
}

/// Opens the database named by DATABASE_URL; `lazy` defers the first connection to first use.
pub async fn connect(settings: &Settings, lazy: bool) -> Result<Store, StartupError> {
    Store::connect(settings, lazy)
        .await
        .map_err(|source| StartupError::Connect {
            url: settings.database_url.redacted(),
            source,
        })
}
