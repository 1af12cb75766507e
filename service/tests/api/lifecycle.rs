//! Shutdown (drain, then finish in-flight requests within a bound) and an unreachable
//! database (503 within a bound, never a hang).

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

crate::on_both_backends!(
    in_flight_requests_complete_after_the_drain,
    shutdown_is_bounded,
);

/// A PostgreSQL URL to a port where nothing listens.
async fn unreachable_database_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("postgres://hello:secret@127.0.0.1:{port}/hello")
}

#[tokio::test]
async fn an_unreachable_database_makes_readyz_and_requests_503_within_the_bound() {
    let url = unreachable_database_url().await;
    let mut settings = test_settings(&url);
    settings.migrate_on_start = false;
    settings.database_connect_timeout = Duration::from_millis(500);
    settings.database_acquire_timeout = Duration::from_millis(500);
    let database = crate::common::TestDatabase { url, _dir: None };
    let app = crate::common::spawn_on(database, &settings).await;

    for (path, status) in [("/readyz", 503), ("/hello/Ann", 503)] {
        let started = Instant::now();
        let message = assert_error(app.get(path).await, status, &["database"]).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            started.elapsed()
        );
        assert!(!message.contains("secret"), "{message}");
    }
    let started = Instant::now();
    assert_error(
        app.put_birthday("Ann", "1990-01-01").await,
        503,
        &["database"],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
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
