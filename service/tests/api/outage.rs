//! The database goes away under a running service: requests and /readyz answer 503 within a
//! bound (never hang), and the service recovers by itself when the database is back.
//! Each test runs its own PostgreSQL container, since it stops it.

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

/// Answers 503 with a JSON error, within [`BOUND`].
async fn assert_unavailable(app: &common::TestApp, path: &str) {
    let started = Instant::now();
    assert_error(app.get(path).await, 503, &[]).await;
    assert!(
        started.elapsed() < BOUND,
        "{path} took {:?}",
        started.elapsed()
    );
}

/// Polls until GET `path` answers 200; the service must recover on its own.
async fn wait_until_ok(app: &common::TestApp, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if app.get(path).await.status() == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{path} did not recover");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the service on the database at `port`, saves a date, takes the database away with
/// `go_down`: every answer is then a 503 within the bound (and /healthz stays 200); brings it
/// back with `come_back`: the service recovers without a restart.
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

    go_down.await;
    assert_unavailable(&app, "/hello/Ann").await;
    assert_unavailable(&app, "/readyz").await;
    let started = Instant::now();
    assert_error(
        app.put_birthday("Bob", "1990-06-17").await,
        503,
        &["database"],
    )
    .await;
    assert!(
        started.elapsed() < BOUND,
        "PUT took {:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    come_back.await;
    wait_until_ok(&app, "/readyz").await;
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
