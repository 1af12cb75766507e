//! Logging, set up once per process: an `EnvFilter` from RUST_LOG and either JSON lines (for
//! deployments) or text, on stdout. Request spans carry the request id, so every line logged
//! while serving a request names it.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG is not a valid log filter")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("logging was already set up")]
    AlreadySet(#[from] tracing_subscriber::util::TryInitError),
}

pub fn init(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(filter)?;
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    // Each span's fields once per line: in the list of spans, not again as
                    // the current span.
                    .with_current_span(false)
                    .with_span_list(true),
            )
            .try_init()?,
        // Colours only for a person at a terminal, never into files or log collectors.
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init()?,
    }
    Ok(())
}
