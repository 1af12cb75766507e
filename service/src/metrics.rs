//! Prometheus metrics: requests by route and status, a latency histogram, database pool gauges,
//! whether the database answers, and the build's version. One recorder per process, installed
//! on first use.

use std::{cell::RefCell, sync::OnceLock, time::Duration};

use axum::{
    extract::MatchedPath,
    http::{Method, StatusCode},
};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{build_info, database_check::DatabaseState, store::PoolStats};

const REQUESTS: &str = "hello_http_requests_total";
const REQUEST_DURATION: &str = "hello_http_request_duration_seconds";
const POOL_CONNECTIONS: &str = "hello_db_pool_connections";
const POOL_MAX_CONNECTIONS: &str = "hello_db_pool_max_connections";
const DATABASE_UP: &str = "hello_database_up";
const BUILD_INFO: &str = "hello_build_info";

/// Latency buckets in seconds: from fast reads to the default 5s request timeout and beyond.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder's handle, installing the recorder on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.to_owned()), DURATION_BUCKETS)
            .unwrap_or_else(|error| {
                // Only an empty bucket list is refused; a summary is the fallback.
                tracing::warn!(%error, "latency buckets refused");
                PrometheusBuilder::new()
            });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        metrics::gauge!(BUILD_INFO, "version" => build_info::VERSION, "commit" => build_info::commit()).set(1.0);
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time to answer HTTP requests, by method and route"
    );
    metrics::describe_gauge!(
        POOL_CONNECTIONS,
        "Open database connections, by state (idle or in_use)"
    );
    metrics::describe_gauge!(
        POOL_MAX_CONNECTIONS,
        "Largest number of database connections the pool opens"
    );
    metrics::describe_gauge!(
        DATABASE_UP,
        "1 when the last check of the database (every second) was answered in time, else 0"
    );
    metrics::describe_gauge!(BUILD_INFO, "Always 1; the labels name the running build");
}

/// The metrics in Prometheus' text format, with the pool gauges read now and the database's
/// state as the last check saw it (no value before the first check has finished).
pub fn render(pool: PoolStats, database: DatabaseState) -> String {
    let handle = handle();
    match database {
        DatabaseState::Ok => metrics::gauge!(DATABASE_UP).set(1.0),
        DatabaseState::Unavailable => metrics::gauge!(DATABASE_UP).set(0.0),
        DatabaseState::Unknown => {}
    }
    metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!(POOL_CONNECTIONS, "state" => "in_use")
        .set(f64::from(pool.open.saturating_sub(pool.idle)));
    metrics::gauge!(POOL_MAX_CONNECTIONS).set(f64::from(pool.max));
    handle.run_upkeep();
    handle.render()
}

/// Counts and times one answered request. Every label comes from a closed set, so that no
/// client can add series: the route template (never the raw path, which would make one series
/// per username), a standard method, else `other` for either.
///
/// The handles of each series are kept per thread once registered: registering builds the
/// series' key (its labels as owned strings) and looks it up in the recorder's map, which was
/// about a twentieth of the service's instructions per GET (docs/service.md).
pub fn record(method: &Method, route: Option<&MatchedPath>, status: StatusCode, elapsed: Duration) {
    handle();
    let route = route.map_or(OTHER, MatchedPath::as_str);
    let method = method_label(method);
    let status = status.as_u16();
    SERIES.with(|series| {
        let Ok(mut series) = series.try_borrow_mut() else {
            return;
        };
        let answered = series.of(method, route, status);
        answered.requests.increment(1);
        answered.duration.record(elapsed.as_secs_f64());
    });
}

thread_local! {
    static SERIES: RefCell<RouteSeries> = const { RefCell::new(RouteSeries(Vec::new())) };
}

/// The handles registered on this thread, by route (a handful), then by method and status.
struct RouteSeries(Vec<(Box<str>, Vec<Answered>)>);

/// The series of requests answered with one method, route and status.
struct Answered {
    method: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl RouteSeries {
    fn of(&mut self, method: &'static str, route: &str, status: u16) -> &Answered {
        let index = match self.0.iter().position(|(known, _)| **known == *route) {
            Some(index) => index,
            None => {
                self.0.push((route.into(), Vec::new()));
                self.0.len() - 1
            }
        };
        let answered = &mut self.0[index].1;
        let found = answered
            .iter()
            .position(|series| series.status == status && series.method == method);
        let index = match found {
            Some(index) => index,
            None => {
                answered.push(register(method, route, status));
                answered.len() - 1
            }
        };
        &answered[index]
    }
}

fn register(method: &'static str, route: &str, status: u16) -> Answered {
    let status_label = status.to_string();
    Answered {
        method,
        status,
        requests: metrics::counter!(REQUESTS, "method" => method, "route" => route.to_owned(), "status" => status_label),
        duration: metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route.to_owned()),
    }
}

/// The label of a request's method: the methods of RFC 9110 (§9.3) and PATCH by name, any other
/// token (hyper accepts every token as a method) as `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or(OTHER)
}

const OTHER: &str = "other";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_are_named_and_any_other_is_other() {
        for name in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(method_label(&method), name);
        }
        for name in ["get", "PROPFIND", "XGETX", &"A".repeat(40)] {
            let method = Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{name}");
        }
    }

    /// Series kept per thread count on: a second request adds to the first one's series.
    #[test]
    fn each_series_counts_every_request_recorded() {
        let record_twice = || {
            for _ in 0..2 {
                record(
                    &Method::GET,
                    None,
                    StatusCode::IM_A_TEAPOT,
                    Duration::from_millis(3),
                );
            }
        };
        record_twice();
        std::thread::spawn(record_twice).join().unwrap();
        let rendered = handle().render();
        assert!(
            rendered.contains(
                r#"hello_http_requests_total{method="GET",route="other",status="418"} 4"#
            ),
            "{rendered}"
        );
        assert!(
            rendered.contains(
                r#"hello_http_request_duration_seconds_count{method="GET",route="other"} "#
            ),
            "{rendered}"
        );
    }
}
