//! Readiness (503 only before start-up has finished and while draining), shutdown (drain, then
//! finish in-flight requests within a bound) and an unreachable database (requests 503 within
//! a bound, never a hang; the service stays ready).

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::common::{Backend, assert_error, spawn_app_with, test_settings};

/// Starts a PUT whose body has not fully arrived: the request is in flight until `finish`.
async fn start_slow_put(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = r#"{"dateOfBirth": "1990-06-16"}"#;
    let head = format!(
        "PUT /hello/Slow HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    stream
}

async fn finish_slow_put(mut stream: TcpStream) -> String {
    let body = r#"{"dateOfBirth": "1990-06-16"}"#;
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// A request accepted before the listener closes completes after it; then the server stops
/// cleanly and refuses new connections.
async fn in_flight_requests_complete_after_the_drain(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| s.drain_period = Duration::from_millis(300)).await;
    let slow = start_slow_put(app.addr).await;
    app.trigger_shutdown();
    // Past the drain period: the listener is closed, the slow request is still in flight.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        TcpStream::connect(app.addr).await.is_err(),
        "the listener is closed"
    );
    let answer = finish_slow_put(slow).await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let outcome = tokio::time::timeout(Duration::from_secs(5), app.stopped())
        .await
        .expect("stops");
    assert!(outcome.is_ok(), "{outcome:?}");
}

/// Requests still unfinished SHUTDOWN_TIMEOUT after the drain do not keep the process up.
async fn shutdown_is_bounded(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| {
        s.drain_period = Duration::from_millis(100);
        s.shutdown_timeout = Duration::from_millis(500);
        s.request_timeout = Duration::from_secs(60);
    })
    .await;
    let _stuck = start_slow_put(app.addr).await;
    let started = Instant::now();
    app.trigger_shutdown();
    let outcome = tokio::time::timeout(Duration::from_secs(5), app.stopped())
        .await
        .expect("stops");
    let error = outcome.expect_err("a stop with a request cut off is reported");
    assert!(error.to_string().contains("SHUTDOWN_TIMEOUT"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// After the shutdown trigger, /readyz answers 503 at once while requests are still served.
async fn readyz_answers_503_while_draining(backend: Backend) {
    let mut app = spawn_app_with(backend, |s| s.drain_period = Duration::from_secs(2)).await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.trigger_shutdown();
    let deadline = Instant::now() + Duration::from_secs(1);
    let message = loop {
        let response = app.get("/readyz").await;
        if response.status() == 503 {
            break assert_error(response, 503, &[]).await;
        }
        assert!(Instant::now() < deadline, "/readyz still answers 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(message, "draining: the service is shutting down");
    assert_eq!(app.put_birthday("Ann", "1990-01-01").await.status(), 204);
    assert_error(app.get_hello("Nobody").await, 404, &["Nobody"]).await;
}

crate::on_both_backends!(
    in_flight_requests_complete_after_the_drain,
    shutdown_is_bounded,
    readyz_answers_503_while_draining,
);

/// GET /readyz through the routes alone, with `state`: its status and JSON body.
async fn readyz_with(state: &hello::state::AppState) -> (u16, serde_json::Value) {
    use tower::ServiceExt as _;

    let request = axum::http::Request::get("/readyz")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = hello::routes::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// Before start-up has finished (the server not serving yet), /readyz answers 503; from then
/// on 200. The routes are called directly, with the state `Application::run_until` marks.
#[tokio::test]
async fn readyz_answers_503_until_start_up_has_finished() {
    let database = crate::common::TestDatabase::fresh(Backend::Sqlite).await;
    let settings = test_settings(&database.url);
    let state = hello::state::AppState {
        store: hello::startup::connect(&settings, false).await.unwrap(),
        clock: std::sync::Arc::new(hello::clock::SystemClock),
        lifecycle: hello::lifecycle::Lifecycle::default(),
        database: hello::database_check::DatabaseStatus::default(),
        database_check_timeout: settings.database_acquire_timeout,
        request_timeout: settings.request_timeout,
    };
    assert_eq!(
        readyz_with(&state).await,
        (
            503,
            serde_json::json!({"error": "starting: the service has not finished starting"})
        )
    );

    state.lifecycle.finish_starting();
    assert_eq!(
        readyz_with(&state).await,
        (
            200,
            serde_json::json!({"status": "ready", "database": "unknown"})
        ),
        "no check has run: nothing started it"
    );
}

/// A PostgreSQL URL to a port where nothing listens.
async fn unreachable_database_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("postgres://hello:secret@127.0.0.1:{port}/hello")
}

#[tokio::test]
async fn an_unreachable_database_makes_requests_503_within_the_bound_and_readyz_report_it() {
    let url = unreachable_database_url().await;
    let mut settings = test_settings(&url);
    settings.migrate_on_start = false;
    settings.database_connect_timeout = Duration::from_millis(500);
    settings.database_acquire_timeout = Duration::from_millis(500);
    let database = crate::common::TestDatabase { url, _dir: None };
    let app = crate::common::spawn_on(database, &settings).await;

    assert_eq!(
        app.wait_for_database("unavailable").await,
        serde_json::json!({"status": "ready", "database": "unavailable"})
    );
    let started = Instant::now();
    let greeting = app.get_hello("Ann").await;
    let greeting_took = started.elapsed();
    let started = Instant::now();
    let save = app.put_birthday("Ann", "1990-01-01").await;
    let save_took = started.elapsed();
    for (what, response, took) in [("GET", greeting, greeting_took), ("PUT", save, save_took)] {
        let message = assert_error(response, 503, &[]).await;
        assert_eq!(
            message, "the database is unavailable: try again shortly",
            "{what}"
        );
        assert!(took < Duration::from_secs(3), "{what} took {took:?}");
    }
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "alive all the same"
    );
}

#[tokio::test]
async fn start_up_with_migrations_fails_naming_database_url_when_it_is_unreachable() {
    let mut settings = test_settings(&unreachable_database_url().await);
    settings.database_connect_timeout = Duration::from_millis(500);
    settings.database_acquire_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = match hello::startup::Application::build(&settings).await {
        Ok(_) => panic!("start-up must fail"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("DATABASE_URL"), "{error}");
    assert!(!error.contains("secret"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
