//! The subcommands: `serve` (the default), `migrate` and `healthcheck`.

use std::process::ExitCode;

use crate::{
    config::{Backend, Cli, Command, Settings},
    healthcheck,
    startup::{self, Application},
    telemetry,
};

pub async fn run(cli: Cli) -> ExitCode {
    let settings = cli.settings;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&settings).await,
        Command::Migrate => migrate(&settings).await,
        Command::Healthcheck => healthcheck::probe(settings.listen_addr).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exiting");
            eprintln!("hello: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: &Settings) -> Result<(), String> {
    telemetry::init(&settings.rust_log, settings.log_format).map_err(|e| e.to_string())?;
    log_settings(settings);
    let app = Application::build(settings)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(addr = %app.local_addr(), metrics_addr = %app.metrics_addr(), "listening");
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

async fn migrate(settings: &Settings) -> Result<(), String> {
    telemetry::init(&settings.rust_log, settings.log_format).map_err(|e| e.to_string())?;
    log_settings(settings);
    let store = startup::connect(settings, false)
        .await
        .map_err(|e| e.to_string())?;
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot apply the database migrations: {e}"))?;
    tracing::info!("database migrations applied");
    Ok(())
}

fn log_settings(settings: &Settings) {
    let backend = match settings.database_url.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    tracing::info!(
        version = crate::build_info::VERSION,
        commit = crate::build_info::commit(),
        database = %settings.database_url,
        backend,
        listen_addr = %settings.listen_addr,
        metrics_addr = %settings.metrics_addr,
        database_max_connections = settings.database_max_connections,
        request_timeout = %humantime::format_duration(settings.request_timeout),
        drain_period = %humantime::format_duration(settings.drain_period),
        shutdown_timeout = %humantime::format_duration(settings.shutdown_timeout),
        header_read_timeout = %humantime::format_duration(settings.header_read_timeout),
        keep_alive_timeout = %humantime::format_duration(settings.keep_alive_timeout),
        max_header_bytes = settings.max_header_bytes,
        max_connections = settings.max_connections,
        migrate_on_start = settings.migrate_on_start,
        "starting"
    );
}
