//! The `hello` binary as deployed: settings from the environment, subcommands, a real SIGTERM,
//! and its log lines.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

const HELLO: &str = env!("CARGO_BIN_EXE_hello");

/// Settings variables a developer's shell or CI may have set, removed so that each test
/// states its own.
const SETTINGS: &[&str] = &[
    "DATABASE_URL",
    "LISTEN_ADDR",
    "METRICS_ADDR",
    "RUST_LOG",
    "LOG_FORMAT",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_ACQUIRE_TIMEOUT",
    "REQUEST_TIMEOUT",
    "DRAIN_PERIOD",
    "SHUTDOWN_TIMEOUT",
    "HEADER_READ_TIMEOUT",
    "KEEP_ALIVE_TIMEOUT",
    "MAX_HEADER_BYTES",
    "MAX_CONNECTIONS",
    "MIGRATE_ON_START",
];

fn hello(dir: &tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(HELLO);
    command.args(args).current_dir(dir.path());
    for variable in SETTINGS {
        command.env_remove(variable);
    }
    command.env(
        "DATABASE_URL",
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("hello.db").display()
        ),
    );
    command.envs(env.iter().copied());
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run hello")
}

/// A `hello serve` process with JSON logs, whose stdout lines are collected as they come.
struct Server {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let mut command = hello(
            dir,
            &["serve"],
            &[
                ("LISTEN_ADDR", "127.0.0.1:0"),
                ("METRICS_ADDR", "127.0.0.1:0"),
                ("LOG_FORMAT", "json"),
            ],
        );
        command.envs(env.iter().copied());
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hello serve");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            lines,
            seen: Vec::new(),
        };
        let listening = server.wait_for_line(|log| log["fields"]["message"] == "listening");
        server.addr = listening["fields"]["addr"]
            .as_str()
            .expect("addr")
            .parse()
            .expect("an address");
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits (at most 20s) for a JSON log line matching `wanted`.
    fn wait_for_line(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no such log line in:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            let log: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            if wanted(&log) {
                return log;
            }
        }
    }

    fn sigterm(&self) {
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: sends a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill -TERM");
    }

    /// Waits for the process to exit and returns its status with every log line.
    fn wait(mut self) -> (std::process::ExitStatus, Vec<Value>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "hello did not exit");
            std::thread::sleep(Duration::from_millis(50));
        };
        self.seen.extend(self.lines.iter());
        let logs = self
            .seen
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect();
        (status, logs)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn bad_settings_stop_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("DATABASE_URL", "mysql://root:hunter2@db/hello"),
        ("LISTEN_ADDR", "localhost"),
        ("RUST_LOG", "hello=chatty"),
        ("LOG_FORMAT", "yaml"),
        ("DATABASE_MAX_CONNECTIONS", "none"),
        ("DATABASE_CONNECT_TIMEOUT", "2 fortnights"),
        ("DATABASE_ACQUIRE_TIMEOUT", "0s"),
        ("REQUEST_TIMEOUT", "5"),
        ("DRAIN_PERIOD", "soon"),
        ("SHUTDOWN_TIMEOUT", "-1s"),
        ("MIGRATE_ON_START", "maybe"),
    ];
    for (variable, value) in cases {
        for subcommand in ["serve", "migrate"] {
            let output = run(&mut hello(&dir, &[subcommand], &[(variable, value)]));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{variable}={value}: {stderr}"
            );
            assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
            assert!(!stderr.contains("hunter2"), "{stderr}");
        }
    }
    assert!(!dir.path().join("hello.db").exists(), "nothing started");
}

#[test]
fn an_unreachable_database_fails_start_up_without_showing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The password in the user info, or as a query parameter (libpq's `password`).
    let cases = [
        (
            format!("postgres://hello:hunter2@127.0.0.1:{port}/hello"),
            "hello:***@127.0.0.1",
        ),
        (
            format!("postgres://hello@127.0.0.1:{port}/hello?sslmode=disable&password=hunter2"),
            "sslmode=disable&password=***",
        ),
    ];
    for (url, shown) in cases {
        let output = run(&mut hello(
            &dir,
            &["serve"],
            &[
                ("DATABASE_URL", &url),
                ("DATABASE_CONNECT_TIMEOUT", "500ms"),
                ("LOG_FORMAT", "json"),
            ],
        ));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
        assert!(stderr.contains(shown), "{stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{stdout}\n{stderr}"
        );
    }
}

#[test]
fn migrate_applies_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&mut hello(&dir, &["migrate"], &[]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("database migrations applied"));
    // Serving without migrating works on the migrated database.
    let server = Server::start(&dir, &[("MIGRATE_ON_START", "false")]);
    let client = reqwest::blocking::Client::new();
    let response = client
        .put(server.url("/hello/Ann"))
        .body(r#"{"dateOfBirth": "1990-01-01"}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
}

#[test]
fn serving_without_migrations_on_an_empty_database_fails_requests_not_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir, &[("MIGRATE_ON_START", "false")]);
    let response = reqwest::blocking::get(server.url("/hello/Ann")).unwrap();
    assert_eq!(response.status(), 500, "no table yet");
    let body: Value = response.json().unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "internal error: try again, and report it if it persists"})
    );
}

#[test]
fn healthcheck_exits_0_only_when_healthz_answers_200() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir, &[]);
    let healthy = run(&mut hello(
        &dir,
        &["healthcheck"],
        &[("LISTEN_ADDR", &server.addr.to_string())],
    ));
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let unspecified = format!("0.0.0.0:{}", server.addr.port());
    let healthy = run(&mut hello(
        &dir,
        &["healthcheck"],
        &[("LISTEN_ADDR", &unspecified)],
    ));
    assert!(healthy.status.success(), "0.0.0.0 is probed on loopback");
    drop(server);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unhealthy = run(&mut hello(
        &dir,
        &["healthcheck"],
        &[("LISTEN_ADDR", &closed.to_string())],
    ));
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("cannot connect"));
}

/// Each request is logged once, as it is answered, with its method, route template, status,
/// time taken and id: the caller's `x-request-id`, else a generated one. (The drain after
/// SIGTERM is tested under load in tests/reliability/test_sigterm.py.)
#[test]
fn every_request_is_logged_once_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir, &[("DRAIN_PERIOD", "0s"), ("RUST_LOG", "debug")]);
    let client = reqwest::blocking::Client::new();
    let response = client
        .put(server.url("/hello/Ann"))
        .header("x-request-id", "req-given")
        .body(r#"{"dateOfBirth": "1990-01-01"}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let generated = client.get(server.url("/hello/Nobody")).send().unwrap();
    assert_eq!(generated.status(), 404);
    let generated_id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    server.sigterm();
    let (status, logs) = server.wait();
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    let messages: Vec<&str> = logs
        .iter()
        .filter_map(|log| log["fields"]["message"].as_str())
        .collect();
    assert!(messages.contains(&"stopped"), "{messages:?}");

    let requests: Vec<&Value> = logs
        .iter()
        .filter(|log| log["fields"]["message"] == "request")
        .collect();
    for (id, method, status) in [
        ("req-given", "PUT", 204),
        (generated_id.as_str(), "GET", 404),
    ] {
        let lines: Vec<&&Value> = requests
            .iter()
            .filter(|log| log["fields"]["request_id"] == id)
            .collect();
        assert_eq!(lines.len(), 1, "{id}: one line per request, got {lines:?}");
        let fields = &lines[0]["fields"];
        assert_eq!(fields["method"], method, "{fields}");
        assert_eq!(fields["route"], "/hello/{username}", "{fields}");
        assert_eq!(fields["status"], status, "{fields}");
        assert!(fields["latency_us"].is_u64(), "{fields}");
        // The raw path never: the route template only, so no username is logged.
        assert!(!lines[0].to_string().contains("Nobody"), "{}", lines[0]);
    }
    // Every line that names a request id names it once.
    for log in &logs {
        let line = log.to_string();
        let named = line.matches("req-given").count() + line.matches(generated_id.as_str()).count();
        assert!(named <= 1, "{line}");
    }
}
