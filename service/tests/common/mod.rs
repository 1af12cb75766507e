//! Helpers shared by the integration tests: a running application on a real socket, against
//! SQLite or PostgreSQL, with a pinned clock and typed request helpers.
// Each test binary uses a part of these helpers.
#![allow(dead_code)]

pub mod postgres;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chrono::{NaiveDate, TimeZone, Utc};
use hello::{
    clock::FixedClock,
    config::{DatabaseUrl, Settings},
    startup::{Application, ServeError},
};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

/// The date every test app starts on, unless it sets its clock.
pub const TODAY: (i32, u32, u32) = (2024, 6, 15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` as two tests, one per backend, in modules `sqlite` and
/// `postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::Postgres).await;
                }
            )+
        }
    };
}

/// A database for one test; a SQLite file lives as long as this value.
pub struct TestDatabase {
    pub url: String,
    pub _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn fresh(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("create a temporary directory");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("hello.db").display()
                );
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => Self {
                url: postgres::shared().fresh_database().await,
                _dir: None,
            },
        }
    }
}

/// Settings for a test app: port 0, short drain, the given database.
pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::defaults();
    settings.database_url = DatabaseUrl::parse(database_url).expect("a valid database URL");
    settings.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.metrics_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.drain_period = Duration::from_millis(200);
    settings.shutdown_timeout = Duration::from_secs(5);
    settings
}

pub struct TestApp {
    pub address: String,
    /// `http://` and the address serving GET /metrics.
    pub metrics_address: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub clock: FixedClock,
    pub database: TestDatabase,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServeError>>>,
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a real date")
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns an app on a fresh database, with settings adjusted by `adjust`.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::fresh(backend).await;
    let mut settings = test_settings(&database.url);
    adjust(&mut settings);
    spawn_on(database, &settings).await
}

pub async fn spawn_on(database: TestDatabase, settings: &Settings) -> TestApp {
    let clock = FixedClock::at_date(date(TODAY.0, TODAY.1, TODAY.2));
    let app = Application::build_with_clock(settings, Arc::new(clock.clone()))
        .await
        .expect("build the application");
    let addr = app.local_addr();
    let metrics_address = format!("http://{}", app.metrics_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address: format!("http://{addr}"),
        metrics_address,
        addr,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build an HTTP client"),
        clock,
        database,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Sets the clock to `day` (at noon UTC).
    pub fn set_today(&self, day: NaiveDate) {
        self.clock
            .set(Utc.from_utc_datetime(&day.and_hms_opt(12, 0, 0).expect("noon")));
    }

    pub async fn put_birthday(&self, username: &str, date_of_birth: &str) -> reqwest::Response {
        self.put_json(
            username,
            &serde_json::json!({ "dateOfBirth": date_of_birth }).to_string(),
        )
        .await
    }

    /// PUT with a raw body and `Content-Type: application/json`.
    pub async fn put_json(&self, username: &str, body: &str) -> reqwest::Response {
        self.put_raw(username, body, Some("application/json")).await
    }

    /// PUT with a raw body and the given Content-Type (none when `None`).
    pub async fn put_raw(
        &self,
        username: &str,
        body: &str,
        content_type: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .put(self.url(&format!("/hello/{username}")))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        request.send().await.expect("send PUT")
    }

    pub async fn get_hello(&self, username: &str) -> reqwest::Response {
        self.get(&format!("/hello/{username}")).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("send GET")
    }

    /// GET on the metrics port (METRICS_ADDR).
    pub async fn get_on_metrics_port(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.metrics_address))
            .send()
            .await
            .expect("send GET to the metrics port")
    }

    /// The greeting for `username`, asserting a 200.
    pub async fn greeting(&self, username: &str) -> String {
        let response = self.get_hello(username).await;
        assert_eq!(response.status(), 200, "GET /hello/{username}");
        let body: Value = response.json().await.expect("a JSON body");
        let fields = body.as_object().expect("an object");
        assert_eq!(fields.len(), 1, "only a message: {body}");
        fields["message"]
            .as_str()
            .expect("a string message")
            .to_owned()
    }

    /// Polls GET /readyz until its body reports the database `state` (`ok`, `unavailable`):
    /// the service checks the database every second. Every answer on the way must be a 200:
    /// the database's state never makes the service unready. Returns the last body.
    pub async fn wait_for_database(&self, state: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let response = self.get("/readyz").await;
            assert_eq!(response.status(), 200, "GET /readyz");
            let body: Value = response.json().await.expect("a JSON body");
            if body["database"] == state {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/readyz never reported the database {state}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of the gauge `name` (a line `name <value>`) on GET /metrics, if any.
    pub async fn gauge(&self, name: &str) -> Option<f64> {
        let text = self
            .get_on_metrics_port("/metrics")
            .await
            .text()
            .await
            .expect("a metrics body");
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.parse().ok())
    }

    /// Fires the shutdown trigger, as SIGTERM does.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server to stop and returns how it ended.
    pub async fn stopped(&mut self) -> Result<(), ServeError> {
        let server = self.server.take().expect("the server runs");
        server.await.expect("the server task did not panic")
    }
}

/// Asserts a JSON error response with `status` whose message contains every one of `needles`.
pub async fn assert_error(response: reqwest::Response, status: u16, needles: &[&str]) -> String {
    let actual = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.text().await.expect("a body");
    assert_eq!(actual, status, "body: {body}");
    assert_eq!(content_type, "application/json", "body: {body}");
    let value: Value = serde_json::from_str(&body).expect("a JSON error body");
    let fields = value.as_object().expect("an object");
    assert_eq!(fields.len(), 1, "only an error: {body}");
    let message = fields["error"].as_str().expect("a string error").to_owned();
    for needle in needles {
        assert!(
            message.contains(needle),
            "{message:?} should contain {needle:?}"
        );
    }
    message
}
