//! The subcommands: `serve` (the default), `migrate` and `healthcheck`.

use std::{error::Error, process::ExitCode};

use crate::{
    config::{Backend, Cli, Command, Settings},
    healthcheck::{self, HealthcheckError},
    startup::{self, Application, ServeError, StartupError},
    telemetry::{self, TelemetryError},
};

/// Why a subcommand failed. Each layer's message names what failed; its cause is its
/// `source()`, and [`report`] prints the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Healthcheck(#[from] HealthcheckError),
}

pub async fn run(cli: Cli) -> ExitCode {
    let settings = cli.settings;
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&settings).await,
        Command::Migrate => migrate(&settings).await,
        Command::Healthcheck => healthcheck::probe(settings.listen_addr)
            .await
            .map_err(CommandError::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let report = report(&error);
            tracing::error!(error = %report, "exiting");
            eprintln!("hello: {report}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `error: cause: cause's cause`. Some libraries already
/// write their cause into their own message (sea-orm's `DbErr` does), so a cause whose text is
/// already on the line is not repeated.
pub fn report(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

async fn serve(settings: &Settings) -> Result<(), CommandError> {
    telemetry::init(&settings.rust_log, settings.log_format)?;
    log_settings(settings);
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr(), metrics_addr = %app.metrics_addr(), "listening");
    Ok(app.run_until_stopped().await?)
}

async fn migrate(settings: &Settings) -> Result<(), CommandError> {
    telemetry::init(&settings.rust_log, settings.log_format)?;
    log_settings(settings);
    let store = startup::connect(settings, false).await?;
    store.migrate().await.map_err(StartupError::Migrate)?;
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

#[cfg(test)]
mod tests {
    use std::io;

    use sea_orm::{DbErr, RuntimeErr};

    use super::*;

    #[test]
    fn the_report_gives_every_cause_once() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let refused = CommandError::from(HealthcheckError::Connect {
            addr,
            source: io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused"),
        });
        assert_eq!(
            report(&refused),
            "cannot connect to 127.0.0.1:9: connection refused"
        );
        // `DbErr` writes its cause into its own message and also returns it as its source.
        let migrate = CommandError::from(StartupError::Migrate(DbErr::Conn(RuntimeErr::Internal(
            "pool closed".to_owned(),
        ))));
        assert_eq!(
            report(&migrate),
            "cannot apply the database migrations: Connection Error: pool closed"
        );
    }
}
