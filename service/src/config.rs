//! Settings from environment variables, each mirrored by a command-line flag (the flag wins).
//! A bad value stops start-up with a message that names the variable.

use std::{fmt, net::SocketAddr, time::Duration};

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

use crate::server::ConnectionLimits;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://hello.db?mode=rwc";
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9090";

#[derive(Debug, Parser)]
#[command(
    name = "hello",
    version,
    about = "Remembers birthdays and greets people on them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Apply pending migrations (unless MIGRATE_ON_START=false), then serve HTTP (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Exit 0 when GET http://LISTEN_ADDR/healthz answers 200, else 1 (for container health checks).
    Healthcheck,
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Database to use: sqlite://FILE?mode=rwc (embedded) or postgres://USER:PASSWORD@HOST:PORT/DB.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true,
          default_value = DEFAULT_DATABASE_URL, value_parser = DatabaseUrlParser)]
    pub database_url: DatabaseUrl,

    /// Address and port to listen on.
    #[arg(long, env = "LISTEN_ADDR", global = true, default_value = DEFAULT_LISTEN_ADDR,
          value_parser = parse_listen_addr)]
    pub listen_addr: SocketAddr,

    /// Address and port serving GET /metrics, apart from the API so that no route to the API
    /// reaches it.
    #[arg(long, env = "METRICS_ADDR", global = true, default_value = DEFAULT_METRICS_ADDR,
          value_parser = parse_metrics_addr)]
    pub metrics_addr: SocketAddr,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `hello=debug,info`).
    #[arg(long, env = "RUST_LOG", global = true, default_value = "info", value_parser = parse_log_filter)]
    pub rust_log: String,

    /// Log line format: `json` (one object per line, for deployments) or `text` (for people).
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest number of open database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", global = true, default_value = "10",
          value_parser = parse_max_connections)]
    pub database_max_connections: u32,

    /// Prepared statements each PostgreSQL connection keeps, by name, for reuse. 0 sends every
    /// statement unnamed, inside a transaction of its own: for PgBouncer older than 1.21 in
    /// transaction pooling, which cannot carry named prepared statements from one transaction to
    /// the next (with 1.21 and later, its max_prepared_statements carries them).
    #[arg(long, env = "DATABASE_STATEMENT_CACHE_CAPACITY", global = true, default_value = "100",
          value_parser = parse_statement_cache_capacity)]
    pub database_statement_cache_capacity: usize,

    /// Bound on opening one database connection.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT", global = true, default_value = "2s",
          value_parser = duration("DATABASE_CONNECT_TIMEOUT"))]
    pub database_connect_timeout: Duration,

    /// Bound on waiting for a free connection from the pool, and on each statement.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", global = true, default_value = "2s",
          value_parser = duration("DATABASE_ACQUIRE_TIMEOUT"))]
    pub database_acquire_timeout: Duration,

    /// Bound on one request; past it the request answers 503.
    #[arg(long, env = "REQUEST_TIMEOUT", global = true, default_value = "5s",
          value_parser = duration("REQUEST_TIMEOUT"))]
    pub request_timeout: Duration,

    /// After SIGTERM or ctrl-c: how long /readyz answers 503 while requests are still served.
    #[arg(long, env = "DRAIN_PERIOD", global = true, default_value = "5s",
          value_parser = duration_or_zero("DRAIN_PERIOD"))]
    pub drain_period: Duration,

    /// After the drain period: bound for in-flight requests to finish.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", global = true, default_value = "10s",
          value_parser = duration("SHUTDOWN_TIMEOUT"))]
    pub shutdown_timeout: Duration,

    /// Bound on receiving a request's head (request line and headers), from the connection's
    /// opening or the request's first byte; past it the connection is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", global = true, default_value = "10s",
          value_parser = duration("HEADER_READ_TIMEOUT"))]
    pub header_read_timeout: Duration,

    /// How long a connection may stay open with no request, between requests. Longer than the
    /// 600s that Google's load balancers keep idle connections to backends.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT", global = true, default_value = "620s",
          value_parser = duration("KEEP_ALIVE_TIMEOUT"))]
    pub keep_alive_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; a larger one is answered 431.
    #[arg(long, env = "MAX_HEADER_BYTES", global = true, default_value = "16384",
          value_parser = parse_max_header_bytes)]
    pub max_header_bytes: usize,

    /// Largest number of open client connections; more wait until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", global = true, default_value = "1024",
          value_parser = parse_max_client_connections)]
    pub max_connections: usize,

    /// Whether `hello serve` applies pending migrations before listening (`true` or `false`).
    #[arg(long, env = "MIGRATE_ON_START", global = true, default_value = "true",
          action = ArgAction::Set, value_parser = parse_migrate_on_start)]
    pub migrate_on_start: bool,
}

impl Settings {
    /// The documented defaults, ignoring the environment (for tests and embedding): an empty
    /// command line parsed with every `env` source removed, so the defaults are written once,
    /// in the attributes above.
    pub fn defaults() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None::<&str>));
        let parsed = command
            .try_get_matches_from(["hello"])
            .and_then(|matches| Cli::from_arg_matches(&matches));
        match parsed {
            Ok(cli) => cli.settings,
            // Every default is a valid value (a unit test parses them), so this cannot happen.
            Err(error) => error.exit(),
        }
    }

    /// The bounds on the server's connections.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.keep_alive_timeout,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Which database engine a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL. It may hold a password, so it is never shown: `Debug` and `Display`
/// print it with the password replaced.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: SecretString,
    backend: Backend,
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let backend = if raw.starts_with("sqlite:") {
            Backend::Sqlite
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            // The value itself is not repeated: it may carry a password.
            return Err(
                "DATABASE_URL must start with sqlite: (e.g. sqlite://hello.db?mode=rwc) \
                        or postgres:// (e.g. postgres://USER:PASSWORD@HOST:5432/DB)"
                    .to_owned(),
            );
        };
        Ok(Self {
            url: SecretString::from(raw),
            backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }

    /// The URL with any password replaced by `***`, fit for logs.
    pub fn redacted(&self) -> String {
        redact_password(self.expose())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `url` with the password of its user info and the value of every query parameter naming a
/// password (`password`, `sslpassword`: libpq's connection parameters) replaced by `***`.
fn redact_password(url: &str) -> String {
    let (base, fragment) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let (before_query, query) = base
        .split_once('?')
        .map_or((base, None), |(b, q)| (b, Some(q)));
    let mut redacted = redact_user_password(before_query);
    if let Some(query) = query {
        redacted.push('?');
        let parameters: Vec<String> = query.split('&').map(redact_password_parameter).collect();
        redacted.push_str(&parameters.join("&"));
    }
    if let Some(fragment) = fragment {
        redacted.push('#');
        redacted.push_str(fragment);
    }
    redacted
}

fn redact_password_parameter(parameter: &str) -> String {
    match parameter.split_once('=') {
        Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => format!("{name}=***"),
        _ => parameter.to_owned(),
    }
}

fn redact_user_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if user.len() == userinfo.len() {
        return url.to_owned();
    }
    format!(
        "{}{user}:***{}",
        &url[..scheme_end],
        &url[scheme_end + at..]
    )
}

/// Parses DATABASE_URL without ever repeating the value in an error (clap's own errors quote
/// the value, and this one may hold a password).
#[derive(Debug, Clone, Copy)]
struct DatabaseUrlParser;

impl clap::builder::TypedValueParser for DatabaseUrlParser {
    type Value = DatabaseUrl;

    fn parse_ref(
        &self,
        command: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<DatabaseUrl, clap::Error> {
        let refuse = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{message}\n"),
            )
            .with_cmd(command)
        };
        let raw = value
            .to_str()
            .ok_or_else(|| refuse("DATABASE_URL must be valid UTF-8".to_owned()))?;
        DatabaseUrl::parse(raw).map_err(refuse)
    }
}

fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| {
        "LISTEN_ADDR must be IP:PORT, such as 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080".to_owned()
    })
}

fn parse_metrics_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| {
        "METRICS_ADDR must be IP:PORT, such as 127.0.0.1:9090 or 0.0.0.0:9090".to_owned()
    })
}

fn parse_log_filter(raw: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(raw)
        .map(|_| raw.to_owned())
        .map_err(|error| {
            format!(
                "RUST_LOG is not a valid log filter (such as info or hello=debug,info): {error}"
            )
        })
}

fn parse_max_connections(raw: &str) -> Result<u32, String> {
    match raw.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(
            "DATABASE_MAX_CONNECTIONS must be a whole number of at least 1, such as 10".to_owned(),
        ),
    }
}

/// Bounds of MAX_HEADER_BYTES: room for a request line and the usual headers, and at most
/// hyper's default buffer (about 400 KiB), which is what the setting lowers.
const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=65536;

fn parse_statement_cache_capacity(raw: &str) -> Result<usize, String> {
    raw.parse().map_err(|_| {
        "DATABASE_STATEMENT_CACHE_CAPACITY must be a whole number, such as 100, or 0 for none"
            .to_owned()
    })
}

fn parse_max_header_bytes(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if MAX_HEADER_BYTES_RANGE.contains(&n) => Ok(n),
        _ => Err(format!(
            "MAX_HEADER_BYTES must be a whole number of bytes from {} to {}, such as 16384",
            MAX_HEADER_BYTES_RANGE.start(),
            MAX_HEADER_BYTES_RANGE.end()
        )),
    }
}

fn parse_max_client_connections(raw: &str) -> Result<usize, String> {
    // A semaphore's permits, at most u32::MAX to be acquired all at once at shutdown.
    match raw.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n as usize),
        _ => Err("MAX_CONNECTIONS must be a whole number of at least 1, such as 1024".to_owned()),
    }
}

fn parse_migrate_on_start(raw: &str) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("MIGRATE_ON_START must be true or false".to_owned()),
    }
}

fn parse_duration(variable: &str, raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|error| format!("{variable} must be a duration such as 500ms, 5s or 1m ({error})"))
}

/// A parser for a strictly positive duration setting, naming `variable` in its errors.
fn duration(
    variable: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |raw| match parse_duration(variable, raw)? {
        zero if zero.is_zero() => Err(format!(
            "{variable} must be longer than 0, such as 500ms or 5s"
        )),
        positive => Ok(positive),
    }
}

/// A parser for a duration setting that may be 0, naming `variable` in its errors.
fn duration_or_zero(
    variable: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |raw| parse_duration(variable, raw)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::defaults();
        assert_eq!(s.database_url.expose(), "sqlite://hello.db?mode=rwc");
        assert_eq!(s.database_url.backend(), Backend::Sqlite);
        assert_eq!(s.listen_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.metrics_addr, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(s.rust_log, "info");
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.database_max_connections, 10);
        assert_eq!(s.database_statement_cache_capacity, 100);
        assert_eq!(s.database_connect_timeout, Duration::from_secs(2));
        assert_eq!(s.database_acquire_timeout, Duration::from_secs(2));
        assert_eq!(s.request_timeout, Duration::from_secs(5));
        assert_eq!(s.drain_period, Duration::from_secs(5));
        assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.keep_alive_timeout, Duration::from_secs(620));
        assert_eq!(s.max_header_bytes, 16384);
        assert_eq!(s.max_connections, 1024);
        assert!(s.migrate_on_start);
    }

    #[test]
    fn flags_set_every_setting() {
        let cli = Cli::try_parse_from([
            "hello",
            "serve",
            "--database-url",
            "postgres://app:pw@db:5432/hello",
            "--listen-addr",
            "0.0.0.0:9000",
            "--metrics-addr",
            "0.0.0.0:9100",
            "--rust-log",
            "hello=debug,warn",
            "--log-format",
            "json",
            "--database-max-connections",
            "3",
            "--database-statement-cache-capacity",
            "0",
            "--database-connect-timeout",
            "750ms",
            "--database-acquire-timeout",
            "1s",
            "--request-timeout",
            "3s",
            "--drain-period",
            "0s",
            "--shutdown-timeout",
            "1m",
            "--header-read-timeout",
            "2s",
            "--keep-alive-timeout",
            "30s",
            "--max-header-bytes",
            "8192",
            "--max-connections",
            "50",
            "--migrate-on-start",
            "false",
        ])
        .unwrap();
        assert_eq!(cli.command, Some(Command::Serve));
        let s = cli.settings;
        assert_eq!(s.database_url.backend(), Backend::Postgres);
        assert_eq!(s.listen_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(s.metrics_addr, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(s.rust_log, "hello=debug,warn");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.database_max_connections, 3);
        assert_eq!(s.database_statement_cache_capacity, 0);
        assert_eq!(s.database_connect_timeout, Duration::from_millis(750));
        assert_eq!(s.database_acquire_timeout, Duration::from_secs(1));
        assert_eq!(s.request_timeout, Duration::from_secs(3));
        assert_eq!(s.drain_period, Duration::ZERO);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(60));
        assert_eq!(s.header_read_timeout, Duration::from_secs(2));
        assert_eq!(s.keep_alive_timeout, Duration::from_secs(30));
        assert_eq!(s.max_header_bytes, 8192);
        assert_eq!(s.max_connections, 50);
        assert!(!s.migrate_on_start);
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        let cases = [
            ("--database-url", "mysql://db/hello", "DATABASE_URL"),
            ("--database-url", "hello.db", "DATABASE_URL"),
            ("--listen-addr", "localhost:8080", "LISTEN_ADDR"),
            ("--listen-addr", "127.0.0.1", "LISTEN_ADDR"),
            ("--metrics-addr", "localhost:9090", "METRICS_ADDR"),
            ("--rust-log", "hello=loud", "RUST_LOG"),
            ("--log-format", "xml", "LOG_FORMAT"),
            (
                "--database-max-connections",
                "0",
                "DATABASE_MAX_CONNECTIONS",
            ),
            (
                "--database-max-connections",
                "ten",
                "DATABASE_MAX_CONNECTIONS",
            ),
            (
                "--database-statement-cache-capacity",
                "many",
                "DATABASE_STATEMENT_CACHE_CAPACITY",
            ),
            (
                "--database-connect-timeout",
                "2",
                "DATABASE_CONNECT_TIMEOUT",
            ),
            (
                "--database-acquire-timeout",
                "0s",
                "DATABASE_ACQUIRE_TIMEOUT",
            ),
            ("--request-timeout", "soon", "REQUEST_TIMEOUT"),
            ("--drain-period=-1s", "", "DRAIN_PERIOD"),
            ("--shutdown-timeout", "10 parsecs", "SHUTDOWN_TIMEOUT"),
            ("--header-read-timeout", "0s", "HEADER_READ_TIMEOUT"),
            ("--keep-alive-timeout", "forever", "KEEP_ALIVE_TIMEOUT"),
            ("--max-header-bytes", "500", "MAX_HEADER_BYTES"),
            ("--max-header-bytes", "1000000", "MAX_HEADER_BYTES"),
            ("--max-connections", "0", "MAX_CONNECTIONS"),
            ("--migrate-on-start", "yes", "MIGRATE_ON_START"),
        ];
        for (flag, value, variable) in cases {
            let args = ["hello", flag, value];
            let args = if value.is_empty() {
                &args[..2]
            } else {
                &args[..]
            };
            let error = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(error.contains(variable), "{flag} {value}: {error}");
        }
    }

    #[test]
    fn a_bad_database_url_is_not_repeated() {
        let error = Cli::try_parse_from(["hello", "--database-url", "mysql://u:s3cret@db/x"])
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn database_urls_never_show_their_password() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/hello",
                "postgres://app:***@db:5432/hello",
            ),
            (
                "postgresql://app:p@ss@db/hello?sslmode=require",
                "postgresql://app:***@db/hello?sslmode=require",
            ),
            ("postgres://app@db/hello", "postgres://app@db/hello"),
            (
                "postgres://app@db/hello?password=s3cret",
                "postgres://app@db/hello?password=***",
            ),
            (
                "postgres://db/hello?sslmode=verify-full&PassWord=s3cret&sslpassword=s3cret#x",
                "postgres://db/hello?sslmode=verify-full&PassWord=***&sslpassword=***#x",
            ),
            (
                "postgres://app:s3cret@db?password=s3cret",
                "postgres://app:***@db?password=***",
            ),
            ("postgres://db/hello", "postgres://db/hello"),
            ("sqlite://hello.db?mode=rwc", "sqlite://hello.db?mode=rwc"),
        ];
        for (raw, shown) in cases {
            let url = DatabaseUrl::parse(raw).unwrap();
            assert_eq!(url.redacted(), shown);
            assert_eq!(url.to_string(), shown);
            assert!(!format!("{url:?}").contains("s3cret"));
        }
    }
}
