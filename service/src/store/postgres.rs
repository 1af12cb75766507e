//! The PostgreSQL connections that requests use: a pool that lends a connection for one
//! statement and takes it back as it is, with no round trip of its own.
//!
//! sqlx's pool is not used for them. sqlx-core 0.9.0 (`src/pool/connection.rs`,
//! `Floating::return_to_pool`) pings every connection handed back to its pool
//! (`self.raw.ping().await`: a Sync message, then a wait for ReadyForQuery) before the
//! connection is idle again, with no time bound, while the connection keeps its pool permit.
//! That is a second round trip for every statement; and on a connection gone silent (its
//! packets dropped, no FIN, no RST: a lost zone, a dead load-balancer backend) the ping waits
//! until TCP gives up, a quarter of an hour, so after `DATABASE_MAX_CONNECTIONS` such
//! connections no statement gets one at all.
//!
//! Here a connection goes back to the idle list untouched after a statement that completed.
//! After one that failed, or was cancelled (its time bound, the request's), the connection is
//! dropped: its socket is closed with nothing sent, and its permit is free at once, so a silent
//! connection costs one statement its time bound and is never waited on again.

use std::{
    str::FromStr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{
    ConnAcquireErr, DbErr, QueryResult, RuntimeErr, Statement,
    sea_query::Values,
    sqlx::{
        self, ConnectOptions as _, Connection as _,
        postgres::{PgConnectOptions, PgConnection, PgRow},
    },
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Connections older than this are closed when handed back, so that the pool follows the
/// database's changes (a switchover, a new address behind the name) within this time.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Connections idle for longer than this are closed, so that a quiet service holds few
/// connections; the same figures as sqlx's pool defaults.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone)]
pub(super) struct PgConnections {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: PgConnectOptions,
    /// No statement cache: statements go unnamed, each in a transaction of its own.
    unnamed: bool,
    /// Idle connections, the most recently used last (lent first, so the others age out).
    idle: Mutex<Vec<Pooled>>,
    /// One permit per connection that may be open.
    permits: Semaphore,
    open: Arc<AtomicU32>,
    connect_timeout: Duration,
    acquire_timeout: Duration,
}

#[derive(Debug)]
struct Pooled {
    connection: PgConnection,
    created_at: Instant,
    idle_since: Instant,
    _open: OpenConnection,
}

/// Counts one open connection for as long as it lives.
#[derive(Debug)]
struct OpenConnection(Arc<AtomicU32>);

impl OpenConnection {
    fn new(open: &Arc<AtomicU32>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection lent for one statement, with its permit. Dropped without [`Lease::give_back`]
/// (the statement failed, or its future was cancelled mid-way) it closes the connection.
struct Lease<'a> {
    pool: &'a Inner,
    pooled: Option<Pooled>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    fn connection(&mut self) -> &mut PgConnection {
        let pooled = self.pooled.as_mut();
        // Set in `Inner::lend`, taken only by `give_back`, which consumes the lease.
        &mut pooled.expect("a lease holds its connection").connection
    }

    /// Returns the connection to the idle list, before the permit is released.
    fn give_back(mut self) {
        if let Some(mut pooled) = self.pooled.take()
            && pooled.created_at.elapsed() < MAX_LIFETIME
        {
            pooled.idle_since = Instant::now();
            self.pool.idle().push(pooled);
        }
    }
}

impl PgConnections {
    /// A pool of at most `max_connections` connections to `url`; none is opened before one is
    /// needed.
    /// With `statement_cache_capacity` 0, each statement is sent unnamed inside a transaction of
    /// its own (see [`unnamed_query`]).
    pub(super) fn new(
        url: &str,
        max_connections: u32,
        statement_cache_capacity: usize,
        connect_timeout: Duration,
        acquire_timeout: Duration,
    ) -> Result<Self, DbErr> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|error| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error))))?
            .statement_cache_capacity(statement_cache_capacity)
            .disable_statement_logging();
        let permits = usize::try_from(max_connections).unwrap_or(usize::MAX);
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                unnamed: statement_cache_capacity == 0,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(permits.min(Semaphore::MAX_PERMITS)),
                open: Arc::new(AtomicU32::new(0)),
                connect_timeout,
                acquire_timeout,
            }),
        })
    }

    /// Runs a query and returns its first row, if any.
    pub(super) async fn query_one(
        &self,
        statement: &Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        let mut lease = self.inner.lend().await?;
        let unnamed = self.inner.unnamed;
        let connection = lease.connection();
        let row: Option<PgRow> = async {
            if !unnamed {
                return query(statement).fetch_optional(connection).await;
            }
            let mut transaction = connection.begin().await?;
            let row = unnamed_query(statement)
                .fetch_optional(&mut *transaction)
                .await?;
            transaction.commit().await?;
            Ok(row)
        }
        .await
        .map_err(|error| DbErr::Query(RuntimeErr::SqlxError(Arc::new(error))))?;
        lease.give_back();
        Ok(row.map(QueryResult::from))
    }

    /// Runs a statement that returns no rows.
    pub(super) async fn execute(&self, statement: &Statement) -> Result<(), DbErr> {
        let mut lease = self.inner.lend().await?;
        let unnamed = self.inner.unnamed;
        let connection = lease.connection();
        async {
            if !unnamed {
                return query(statement).execute(connection).await.map(drop);
            }
            let mut transaction = connection.begin().await?;
            unnamed_query(statement).execute(&mut *transaction).await?;
            transaction.commit().await
        }
        .await
        .map_err(|error| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(error))))?;
        lease.give_back();
        Ok(())
    }

    /// One round trip on a pooled connection (or a new one).
    pub(super) async fn ping(&self) -> Result<(), DbErr> {
        let mut lease = self.inner.lend().await?;
        lease
            .connection()
            .ping()
            .await
            .map_err(|error| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error))))?;
        lease.give_back();
        Ok(())
    }

    /// Closes every idle connection: after one was found broken, the others opened before are
    /// suspect, and new ones cost less than a statement failing on each.
    pub(super) fn close_idle(&self) {
        let closed = std::mem::take(&mut *self.inner.idle());
        drop(closed);
    }

    /// Open connections (lent and idle) and idle ones.
    pub(super) fn stats(&self) -> (u32, usize) {
        let idle = self.inner.idle().len();
        (self.inner.open.load(Ordering::Relaxed), idle)
    }
}

impl Inner {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Pooled>> {
        // The list stays consistent whatever panicked while holding it: take it back.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit within the acquire timeout, then the most recently used idle connection or a
    /// new one within the connect timeout.
    async fn lend(&self) -> Result<Lease<'_>, DbErr> {
        let permit = tokio::time::timeout(self.acquire_timeout, self.permits.acquire())
            .await
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?
            .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))?;
        let reused = {
            let mut idle = self.idle();
            idle.retain(|pooled| pooled.idle_since.elapsed() < IDLE_TIMEOUT);
            idle.pop()
        };
        let pooled = match reused {
            Some(pooled) => pooled,
            // Boxed: opening a connection (TCP, TLS, start-up) is a future of several KiB
            // that every statement's future would otherwise carry, and move, for nothing
            // once the pool is warm.
            None => Box::pin(self.open_connection()).await?,
        };
        Ok(Lease {
            pool: self,
            pooled: Some(pooled),
            _permit: permit,
        })
    }

    async fn open_connection(&self) -> Result<Pooled, DbErr> {
        let connection = tokio::time::timeout(
            self.connect_timeout,
            PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))?
        .map_err(|error| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error))))?;
        let now = Instant::now();
        Ok(Pooled {
            connection,
            created_at: now,
            idle_since: now,
            _open: OpenConnection::new(&self.open),
        })
    }
}

/// The statement unnamed, for connections without a statement cache (`DATABASE_STATEMENT_CACHE_CAPACITY`
/// 0: PgBouncer before 1.21 in transaction pooling). sqlx-postgres 0.9.0 (`src/connection/executor.rs`,
/// `prepare`) still names a statement when its cache is off, unless the query is not persistent;
/// and it parses a statement, waiting for ReadyForQuery, before it binds and executes it. PgBouncer
/// in transaction pooling hands the server connection to another client at every ReadyForQuery
/// outside a transaction, so the Bind could reach a server where the statement was never parsed,
/// or another client's unnamed statement: the callers run it inside BEGIN ... COMMIT, which keeps
/// the server connection theirs.
fn unnamed_query(statement: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    query(statement).persistent(false)
}

/// The statement SeaORM built, with its values bound as SeaORM's own driver binds them
/// (sea-orm 2.0.4, `src/driver/sqlx_postgres.rs`, `sqlx_query`): a prepared statement, cached
/// on each connection.
fn query(statement: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    let values = statement.values.clone().unwrap_or(Values(Vec::new()));
    sqlx::query_with(
        sqlx::AssertSqlSafe(statement.sql.as_str()),
        SqlxValues(values),
    )
}
