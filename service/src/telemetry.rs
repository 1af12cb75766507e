//! Logging, set up once per process: an `EnvFilter` from RUST_LOG and either JSON lines (for
//! deployments) or text, on stdout. Each request is logged once, as it is answered
//! ([`log_answered`]); every line logged while serving a request names its id.

mod request_line;

use std::{
    io::IsTerminal,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use axum::{
    extract::MatchedPath,
    http::{HeaderName, HeaderValue, Method, StatusCode},
};

use tracing::Level;
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
            .try_init()
            .map(|()| JSON_REQUEST_LINES.store(true, Ordering::Relaxed))?,
        // Colours only for a person at a terminal, never into files or log collectors.
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init()?,
    }
    Ok(())
}

/// Whether [`log_answered`] writes its JSON line itself ([`request_line`]) rather than through
/// tracing: set once JSON logging is set up.
static JSON_REQUEST_LINES: AtomicBool = AtomicBool::new(false);

/// The request-id header, echoed to the caller and logged with every line of a request. A
/// `HeaderName` made once: given as text, the name was parsed and checked at each of its uses,
/// three per request.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The id of the request being served on this task, set by [`serving`].
    static REQUEST_ID: HeaderValue;
}

/// Displays the id of the request being served on this task (empty outside a request), for
/// the lines logged while serving it: `tracing::warn!(request_id = %CurrentRequestId, ...)`.
pub struct CurrentRequestId;

impl std::fmt::Display for CurrentRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        REQUEST_ID
            .try_with(|id| f.write_str(id.to_str().unwrap_or_default()))
            .unwrap_or(Ok(()))
    }
}

/// Runs `serving` (a request being served) with `id` as its [`CurrentRequestId`].
pub async fn serving<F: Future>(id: HeaderValue, serving: F) -> F::Output {
    REQUEST_ID.scope(id, serving).await
}

/// Logs one line for an answered request: method, route template (never the raw path), status,
/// time taken and request id. No span is opened per request: a span (its fields formatted when
/// it opens, entered and left on every poll) was most of a sixth of the service's instructions
/// per GET (docs/service.md). Lines logged while serving the request name the same id through
/// [`CurrentRequestId`].
///
/// With JSON logs the line is written by hand ([`request_line`]), the same line as tracing's,
/// when RUST_LOG lets this module log at `info`; every other line goes through tracing.
pub fn log_answered(
    method: &Method,
    route: Option<&MatchedPath>,
    status: StatusCode,
    elapsed: Duration,
    id: &HeaderValue,
) {
    let answered = request_line::Answered {
        method: method.as_str(),
        route: route.map_or("unmatched", MatchedPath::as_str),
        status: status.as_u16(),
        latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        request_id: id.to_str().unwrap_or_default(),
    };
    if JSON_REQUEST_LINES.load(Ordering::Relaxed) {
        if tracing::enabled!(Level::INFO) {
            request_line::write(&answered);
        }
    } else {
        log_through_tracing(&answered);
    }
}

fn log_through_tracing(answered: &request_line::Answered<'_>) {
    tracing::info!(
        method = answered.method,
        route = answered.route,
        status = answered.status,
        latency_us = answered.latency_us,
        request_id = answered.request_id,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_current_request_id_is_the_served_one_and_empty_outside_a_request() {
        assert_eq!(CurrentRequestId.to_string(), "");
        let id = HeaderValue::from_static("req-1");
        let inside = serving(id, async { CurrentRequestId.to_string() }).await;
        assert_eq!(inside, "req-1");
        assert_eq!(CurrentRequestId.to_string(), "");
    }
}
