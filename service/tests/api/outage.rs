//! The database goes away under a running service: requests answer the documented 503 within a
//! bound (never hang) while /readyz stays 200 and reports the database unavailable (so that a
//! database shared by every pod never empties the load balancer), and the service recovers by
//! itself when the database is back. Each test runs its own PostgreSQL container, since it
//! stops it.

use std::time::{Duration, Instant};

use testcontainers::{ContainerAsync, ImageExt, core::IntoContainerPort, runners::AsyncRunner};
use testcontainers_modules::postgres::Postgres;

use crate::common::{self, TestDatabase, assert_error, spawn_on, test_settings};

const BOUND: Duration = Duration::from_secs(4);

fn outage_settings(url: &str) -> hello::config::Settings {
    let mut settings = test_settings(url);
    settings.database_connect_timeout = Duration::from_secs(1);
    settings.database_acquire_timeout = Duration::from_secs(1);
    settings.request_timeout = Duration::from_secs(3);
    settings
}

/// The body of every 503 for a database outage (docs/service.md, the API's errors).
const UNAVAILABLE: &str = "the database is unavailable: try again shortly";

/// Answers the outage's documented 503 within [`BOUND`].
async fn assert_unavailable(response: impl Future<Output = reqwest::Response>, what: &str) {
    let started = Instant::now();
    let message = assert_error(response.await, 503, &[]).await;
    assert_eq!(message, UNAVAILABLE, "{what}");
    assert!(
        started.elapsed() < BOUND,
        "{what} took {:?}",
        started.elapsed()
    );
}

/// Runs the service on the database at `port`, saves a date, takes the database away with
/// `go_down`: every request is then answered the documented 503 within the bound, while
/// /readyz and /healthz stay 200 and /readyz and /metrics report the database unavailable;
/// brings it back with `come_back`: the service reports it and serves without a restart.
async fn survives_an_outage(
    port: u16,
    go_down: impl Future<Output = ()>,
    come_back: impl Future<Output = ()>,
) {
    let url = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
    let database = TestDatabase {
        url: url.clone(),
        _dir: None,
    };
    let app = spawn_on(database, &outage_settings(&url)).await;
    app.put_birthday("Ann", "1990-06-16")
        .await
        .error_for_status()
        .unwrap();

    assert_eq!(app.wait_for_database("ok").await["status"], "ready");
    assert_eq!(app.gauge("hello_database_up").await, Some(1.0));

    go_down.await;
    // Every answer of /readyz on the way is a 200 (`wait_for_database` asserts it).
    app.wait_for_database("unavailable").await;
    assert_eq!(app.gauge("hello_database_up").await, Some(0.0));
    assert_unavailable(app.get_hello("Ann"), "GET /hello/Ann").await;
    assert_unavailable(app.put_birthday("Bob", "1990-06-17"), "PUT /hello/Bob").await;
    let started = Instant::now();
    let readiness = app.get("/readyz").await;
    assert_eq!(readiness.status(), 200, "ready while the database is away");
    assert_eq!(
        readiness.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ready", "database": "unavailable"})
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/readyz must not wait on the database: {:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    come_back.await;
    app.wait_for_database("ok").await;
    assert_eq!(app.gauge("hello_database_up").await, Some(1.0));
    assert_eq!(
        app.greeting("Ann").await,
        "Hello, Ann! Your birthday is in 1 day(s)"
    );
    assert_eq!(app.put_birthday("Bob", "1990-06-17").await.status(), 204);
}

/// A frozen database (the container paused: connections stay open, nothing answers).
#[tokio::test]
async fn a_frozen_database_gives_503_within_the_bound_then_recovers() {
    let container = common::postgres::start_container().await;
    let port = container.get_host_port_ipv4(5432).await.unwrap();
    survives_an_outage(port, async { container.pause().await.unwrap() }, async {
        container.unpause().await.unwrap()
    })
    .await;
}

/// A PostgreSQL container published on a host port chosen up front, so that a restart of the
/// container keeps it (testcontainers picks a new one otherwise).
async fn postgres_on_a_fixed_port() -> (ContainerAsync<Postgres>, u16) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (name, tag) = common::postgres::image();
    let container = Postgres::default()
        .with_name(name)
        .with_tag(tag)
        .with_mapped_port(port, 5432.tcp())
        .start()
        .await
        .expect("start PostgreSQL (see tests/common/postgres.rs)");
    (container, port)
}

/// Four greetings of Ann at once, each answered 200: they hold (and then leave idle) four
/// pooled connections.
async fn greet_ann_four_times_at_once(app: &common::TestApp) {
    let greetings = tokio::join!(
        app.get_hello("Ann"),
        app.get_hello("Ann"),
        app.get_hello("Ann"),
        app.get_hello("Ann")
    );
    for response in <[_; 4]>::from(greetings) {
        assert_eq!(response.status(), 200);
    }
}

/// Pooled connections broken by a database restart are not handed out again as they are: the
/// first requests after the database is back succeed, none answers 5xx.
#[tokio::test]
async fn requests_right_after_a_database_restart_succeed() {
    let (container, port) = postgres_on_a_fixed_port().await;
    let url = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
    let database = TestDatabase {
        url: url.clone(),
        _dir: None,
    };
    let app = spawn_on(database, &outage_settings(&url)).await;
    assert_eq!(app.put_birthday("Ann", "1990-06-16").await.status(), 204);
    // Several requests at once leave several connections idle in the pool.
    greet_ann_four_times_at_once(&app).await;

    container.stop().await.unwrap();
    container.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sea_orm::Database::connect(&url).await.is_err() {
        assert!(Instant::now() < deadline, "PostgreSQL did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    greet_ann_four_times_at_once(&app).await;
    assert_eq!(app.put_birthday("Bob", "1990-06-17").await.status(), 204);
}
