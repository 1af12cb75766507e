//! The floor bench/run compares the service with: `GET /hello/{name}` and `PUT /hello/{name}`
//! answered with the service's two statements, by hyper and tokio-postgres alone. Statements are
//! prepared once per connection; requests take the connections in turn (tokio-postgres
//! pipelines the statements of concurrent requests on one connection). No framework, no
//! logging, no metrics: what any Rust service doing this work must spend at least.
//!
//! Settings from the environment: `DATABASE_URL` (`postgres://...`, no TLS), `LISTEN_ADDR`,
//! `DATABASE_MAX_CONNECTIONS` (default 10). Exits on the first failure to start.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use chrono::{Datelike, NaiveDate, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_postgres::{Client, NoTls, Statement};

/// The statements the service sends (SeaORM's text for its `find_by_id(..).one()` and its
/// upsert), as in bench/pgbench/.
const SELECT: &str = r#"SELECT "users"."username", "users"."date_of_birth", "users"."updated_at" FROM "users" WHERE "users"."username" = $1 LIMIT $2"#;
const UPSERT: &str = r#"INSERT INTO "users" ("username", "date_of_birth", "updated_at") VALUES ($1, $2, $3) ON CONFLICT ("username") DO UPDATE SET "date_of_birth" = "excluded"."date_of_birth", "updated_at" = "excluded"."updated_at""#;
const BODY_LIMIT: usize = 16 * 1024;

struct Connection {
    client: Client,
    select: Statement,
    upsert: Statement,
}

struct Database {
    connections: Vec<Connection>,
    next: AtomicUsize,
}

impl Database {
    fn connection(&self) -> &Connection {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.connections[turn % self.connections.len()]
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        response.headers_mut().insert(
            CONTENT_TYPE,
            "application/json".parse().expect("a valid header value"),
        );
    }
    response
}

fn days_until_birthday(born: NaiveDate, today: NaiveDate) -> i64 {
    let in_year = |year| {
        born.with_year(year)
            .or_else(|| NaiveDate::from_ymd_opt(year, 2, 28))
            .unwrap_or(born)
    };
    let this_year = in_year(today.year());
    let next = if this_year >= today {
        this_year
    } else {
        in_year(today.year() + 1)
    };
    (next - today).num_days()
}

/// The date of `{"dateOfBirth":"YYYY-MM-DD"}`, the one body shape the benchmark sends.
fn date_of_birth(body: &[u8]) -> Option<NaiveDate> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split('"').map(str::trim);
    let shape = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    match shape {
        ("{", "dateOfBirth", ":", date, "}") => NaiveDate::parse_from_str(date, "%Y-%m-%d").ok(),
        _ => None,
    }
}

async fn handle(request: Request<Incoming>, database: Arc<Database>) -> Result<Answer, Infallible> {
    if request.uri().path() == "/readyz" {
        return Ok(answer(StatusCode::OK, r#"{"status":"ready"}"#));
    }
    let Some(name) = request.uri().path().strip_prefix("/hello/") else {
        return Ok(answer(StatusCode::NOT_FOUND, r#"{"error":"no such path"}"#));
    };
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|byte| byte.is_ascii_alphabetic()) {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            r#"{"error":"bad username"}"#,
        ));
    }
    let name = name.to_owned();
    let connection = database.connection();
    let today = Utc::now().date_naive();
    Ok(match *request.method() {
        Method::GET => match connection
            .client
            .query_opt(&connection.select, &[&name, &1_i64])
            .await
        {
            Ok(Some(row)) => {
                let message = match days_until_birthday(row.get(1), today) {
                    0 => format!(r#"{{"message":"Hello, {name}! Happy birthday!"}}"#),
                    days => format!(
                        r#"{{"message":"Hello, {name}! Your birthday is in {days} day(s)"}}"#
                    ),
                };
                answer(StatusCode::OK, message)
            }
            Ok(None) => answer(
                StatusCode::NOT_FOUND,
                r#"{"error":"no date of birth saved"}"#,
            ),
            Err(_) => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"database unavailable"}"#,
            ),
        },
        Method::PUT => {
            let body = Limited::new(request.into_body(), BODY_LIMIT)
                .collect()
                .await;
            let born = body.ok().and_then(|body| date_of_birth(&body.to_bytes()));
            match born {
                Some(born) if born < today => {
                    let saved = connection
                        .client
                        .execute(&connection.upsert, &[&name, &born, &Utc::now()])
                        .await;
                    match saved {
                        Ok(_) => answer(StatusCode::NO_CONTENT, Bytes::new()),
                        Err(_) => answer(
                            StatusCode::SERVICE_UNAVAILABLE,
                            r#"{"error":"database unavailable"}"#,
                        ),
                    }
                }
                _ => answer(StatusCode::BAD_REQUEST, r#"{"error":"bad date of birth"}"#),
            }
        }
        _ => answer(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method not allowed"}"#,
        ),
    })
}

async fn connect(url: &str) -> Result<Connection, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    let select = client.prepare(SELECT).await?;
    let upsert = client.prepare(UPSERT).await?;
    Ok(Connection {
        client,
        select,
        upsert,
    })
}

fn setting(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name}"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let url = setting("DATABASE_URL")?;
    let listen: SocketAddr = setting("LISTEN_ADDR")?
        .parse()
        .map_err(|error| format!("LISTEN_ADDR: {error}"))?;
    let count: usize = match std::env::var("DATABASE_MAX_CONNECTIONS") {
        Ok(raw) => raw
            .parse()
            .map_err(|error| format!("DATABASE_MAX_CONNECTIONS: {error}"))?,
        Err(_) => 10,
    };
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        connections.push(
            connect(&url)
                .await
                .map_err(|error| format!("database: {error}"))?,
        );
    }
    let database = Arc::new(Database {
        connections,
        next: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| format!("{listen}: {error}"))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let database = Arc::clone(&database);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, Arc::clone(&database)));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
