//! /healthz, /readyz, /metrics (on its own port), /openapi.json and the request id.

use serde_json::Value;

use crate::common::{Backend, assert_error, spawn_app, spawn_app_with};

async fn healthz_reports_the_build(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let commit = option_env!("HELLO_GIT_COMMIT")
        .filter(|c| !c.trim().is_empty())
        .unwrap_or("unknown");
    assert_eq!(body["commit"], commit.trim());
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
}

/// Ready from the start; the body reports the database's state once it has been checked.
async fn readyz_is_200_and_reports_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.wait_for_database("ok").await,
        serde_json::json!({"status": "ready", "database": "ok"})
    );
}

/// Metrics are served on METRICS_ADDR only: the API's port has no such route, and the metrics
/// port serves nothing of the API.
async fn metrics_are_apart_from_the_api(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_error(app.get("/metrics").await, 404, &["/metrics"]).await;
    for path in ["/hello/Ann", "/healthz", "/openapi.json"] {
        let response = app.get_on_metrics_port(path).await;
        assert_eq!(response.status(), 404, "{path} on the metrics port");
    }
}

async fn metrics_count_requests_time_them_and_show_the_pool(backend: Backend) {
    let app = spawn_app(backend).await;
    app.wait_for_database("ok").await;
    app.get_hello("Nobody").await;
    app.put_birthday("Ann", "1990-01-01").await;
    let response = app.get_on_metrics_port("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let has = |prefix: &str| text.lines().any(|line| line.starts_with(prefix));
    let version = env!("CARGO_PKG_VERSION");
    for expected in [
        r#"hello_http_requests_total{method="GET",route="/hello/{username}",status="404"} "#,
        r#"hello_http_requests_total{method="PUT",route="/hello/{username}",status="204"} "#,
        r#"hello_http_request_duration_seconds_bucket{method="GET",route="/hello/{username}",le="0.005"} "#,
        r#"hello_http_request_duration_seconds_bucket{method="PUT",route="/hello/{username}",le="+Inf"} "#,
        r#"hello_http_request_duration_seconds_count{method="GET",route="/hello/{username}"} "#,
        r#"hello_db_pool_connections{state="idle"} "#,
        r#"hello_db_pool_connections{state="in_use"} "#,
        "hello_db_pool_max_connections 10",
        "hello_database_up 1",
        "# TYPE hello_database_up gauge",
        "# TYPE hello_http_requests_total counter",
        "# TYPE hello_http_request_duration_seconds histogram",
    ] {
        assert!(has(expected), "missing {expected:?} in\n{text}");
    }
    let build_info = format!(r#"hello_build_info{{version="{version}",commit=""#);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&build_info) && l.ends_with("} 1")),
        "{text}"
    );
    assert!(!text.contains("Nobody"), "usernames never become labels");
}

async fn openapi_describes_every_route(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().unwrap();
    let mut routes: Vec<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            "get /healthz",
            "get /hello/{username}",
            "get /openapi.json",
            "get /readyz",
            "put /hello/{username}",
        ]
    );
    let put = &paths["/hello/{username}"]["put"];
    let statuses: Vec<&str> = put["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(statuses, ["204", "400", "405", "413", "415", "503"]);
    let schemas = &document["components"]["schemas"];
    assert_eq!(
        schemas["SaveBirthday"]["required"],
        serde_json::json!(["dateOfBirth"])
    );
    assert_eq!(
        schemas["ErrorBody"]["required"],
        serde_json::json!(["error"])
    );
    assert_eq!(
        schemas["Ready"]["required"],
        serde_json::json!(["status", "database"])
    );
    let readyz: Vec<&str> = paths["/readyz"]["get"]["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(readyz, ["200", "503"]);
    assert_eq!(
        document,
        serde_json::to_value(hello::routes::openapi()).unwrap()
    );
}

async fn the_request_id_is_echoed_or_made_up(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let first = app.get("/hello/Nobody").await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let second = app.get("/hello/Nobody").await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.len(), 36, "a UUID: {first}");
    assert_ne!(first, second);
    // A long id, or one with characters beyond letters, digits and -_.:, is replaced.
    for unsafe_id in [
        "a".repeat(65),
        "two words".to_owned(),
        "{\"x\":1}".to_owned(),
    ] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", &unsafe_id)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(
            echoed.len(),
            36,
            "a UUID instead of {unsafe_id:?}: {echoed}"
        );
    }
}

/// A request that outlives REQUEST_TIMEOUT answers 503 instead of hanging: here a body that
/// never finishes arriving.
async fn a_request_over_the_timeout_answers_503(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(backend, |s| {
        s.request_timeout = std::time::Duration::from_millis(300)
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"PUT /hello/Ann HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_string(&mut answer),
    )
    .await
    .expect("an answer within the bound")
    .unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"the request did not complete within 300ms"#),
        "{answer}"
    );
    // The app still serves.
    assert_error(app.get_hello("Ann").await, 404, &["Ann"]).await;
}

crate::on_both_backends!(
    healthz_reports_the_build,
    readyz_is_200_and_reports_the_database,
    metrics_count_requests_time_them_and_show_the_pool,
    metrics_are_apart_from_the_api,
    openapi_describes_every_route,
    the_request_id_is_echoed_or_made_up,
    a_request_over_the_timeout_answers_503,
);
