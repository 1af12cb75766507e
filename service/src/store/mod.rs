//! Persistence: saved dates of birth, behind a small interface that speaks in domain types.

mod broken;
mod postgres;
mod users;

use std::{
    future::Future,
    sync::{Arc, LazyLock},
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, Database, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, FromQueryResult, Insert, QuerySelect, QueryTrait, Select, Set, Statement,
    sea_query::{OnConflict, Value, Values},
};

use crate::{
    config::Settings,
    domain::{DateOfBirth, Username},
    telemetry::CurrentRequestId,
};
use broken::{ConnectionFailures, is_broken_connection};
use postgres::PgConnections;
use sqlx::sqlite::SqliteJournalMode;

/// How long SeaORM's pool keeps an idle PostgreSQL connection (it only migrates there).
const MIGRATION_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Open connections of the pool, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

#[derive(Debug, Clone)]
pub struct Store {
    /// SeaORM's pool: migrations, and every statement on SQLite.
    db: DatabaseConnection,
    /// On PostgreSQL, the connections that requests' statements and database checks run on
    /// (see [`postgres`] for why not SeaORM's pool).
    postgres: Option<PgConnections>,
    max_connections: u32,
    failures: Arc<ConnectionFailures>,
    /// How long one statement may take: the acquire timeout. A single-row statement that
    /// takes longer means the database is not answering (a frozen server, a half-open
    /// connection), which must surface as an outage, never as a hung request.
    statement_timeout: Duration,
}

impl Store {
    /// Opens the connection pool. When `lazy`, no connection is made until one is needed, so
    /// the service starts (and reports the database unavailable) while the database is down.
    ///
    /// A pooled connection is not pinged before each use, nor after (either would be a second
    /// round trip per request); a broken one is found by the statement that fails on it, which
    /// [`Store::retry_once_if_broken`] then runs once more on another connection.
    ///
    /// SQLite runs in write-ahead-log mode: readers no longer wait for the writer, and a commit
    /// costs one sync of the log instead of several of the database and its rollback journal.
    /// Commits stay durable (`synchronous` keeps SQLite's default, FULL).
    pub async fn connect(settings: &Settings, lazy: bool) -> Result<Self, DbErr> {
        let failures = Arc::new(ConnectionFailures::default());
        let statement_cache_capacity = settings.database_statement_cache_capacity;
        let mut options = ConnectOptions::new(settings.database_url.expose());
        options
            .max_connections(settings.database_max_connections)
            .min_connections(0)
            .connect_timeout(settings.database_connect_timeout)
            .acquire_timeout(settings.database_acquire_timeout)
            .test_before_acquire(false)
            .map_sqlx_postgres_opts(move |pg| pg.statement_cache_capacity(statement_cache_capacity))
            // On PostgreSQL this pool only migrates: the connection it opened closes soon
            // after, so the service holds no more than DATABASE_MAX_CONNECTIONS for long.
            .map_sqlx_postgres_pool_opts(|pool| pool.idle_timeout(MIGRATION_IDLE_TIMEOUT))
            .map_sqlx_sqlite_opts(|sqlite| sqlite.journal_mode(SqliteJournalMode::Wal))
            .map_sqlx_sqlite_pool_opts({
                let failures = Arc::clone(&failures);
                move |pool| failures.check_before_acquire(pool)
            })
            .connect_lazy(lazy)
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        let postgres = match db.get_database_backend() {
            DatabaseBackend::Postgres => Some(PgConnections::new(
                settings.database_url.expose(),
                settings.database_max_connections,
                statement_cache_capacity,
                settings.database_connect_timeout,
                settings.database_acquire_timeout,
            )?),
            _ => None,
        };
        Ok(Self {
            db,
            postgres,
            max_connections: settings.database_max_connections,
            failures,
            statement_timeout: settings.database_acquire_timeout,
        })
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// Saves or replaces a user's date of birth, in one statement, so that concurrent saves for
    /// one name never conflict.
    pub async fn save_birthday(
        &self,
        username: &Username,
        date_of_birth: DateOfBirth,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        if let Some(postgres) = &self.postgres {
            let statement = upsert_statement(username.as_str(), date_of_birth.date(), now);
            return self
                .retry_once_if_broken(|| postgres.execute(&statement))
                .await;
        }
        let db = &self.db;
        self.retry_once_if_broken(|| {
            // Boxed: SeaORM's future for a statement on its generic connection is several KiB,
            // which every PUT's future, PostgreSQL's included, would otherwise carry and move.
            Box::pin(
                upsert(username.as_str(), date_of_birth.date(), now).exec_without_returning(db),
            )
        })
        .await?;
        Ok(())
    }

    pub async fn birthday(&self, username: &Username) -> Result<Option<DateOfBirth>, DbErr> {
        let user = if let Some(postgres) = &self.postgres {
            let statement = find_statement(username.as_str());
            self.retry_once_if_broken(|| postgres.query_one(&statement))
                .await?
                .map(|row| users::Model::from_query_result(&row, ""))
                .transpose()?
        } else {
            let db = &self.db;
            let find = find(username.as_str());
            let find = &find;
            // Boxed, as in `save_birthday`: SeaORM's future would size every GET's future.
            self.retry_once_if_broken(|| Box::pin(find.clone().one(db)))
                .await?
        };
        Ok(user.map(|user| DateOfBirth::from_stored(user.date_of_birth)))
    }

    /// Runs `operation`, and once more when it failed because its pooled connection was
    /// broken (the database restarted since the connection was last used, say). Only for
    /// idempotent operations: the first attempt may have been applied before the connection
    /// broke. Connections idle since before the failure are checked before the second attempt
    /// gets one, so it runs on a live connection or fails as an outage.
    async fn retry_once_if_broken<T, F, Fut>(&self, operation: F) -> Result<T, DbErr>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, DbErr>>,
    {
        // Bound to a name first: a future awaited in the `match` itself would live to the
        // match's end, and the second attempt's future would be laid out beside it instead of
        // in its place, doubling the size of every request's future (each is moved, and copied
        // into a box, several times per request).
        let first = self.bounded(operation()).await;
        match first {
            Err(error) if is_broken_connection(&error) => {
                self.failures.record();
                if let Some(postgres) = &self.postgres {
                    postgres.close_idle();
                }
                tracing::info!(
                    %error,
                    request_id = %CurrentRequestId,
                    "a pooled database connection was broken: trying another"
                );
                self.bounded(operation()).await
            }
            result => result,
        }
    }

    /// Runs one statement within [`Store::statement_timeout`]; past it, the database counts
    /// as unreachable, like a connection that could not be had in time.
    async fn bounded<T>(
        &self,
        statement: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        tokio::time::timeout(self.statement_timeout, statement)
            .await
            .unwrap_or(Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)))
    }

    /// Checks that the database answers, within `bound`.
    pub async fn ping(&self, bound: Duration) -> Result<(), PingError> {
        let ping = async {
            match &self.postgres {
                Some(postgres) => postgres.ping().await,
                None => self.db.ping().await,
            }
        };
        match tokio::time::timeout(bound, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(PingError::Failed(error)),
            Err(_) => Err(PingError::TimedOut(bound)),
        }
    }

    pub fn pool_stats(&self) -> PoolStats {
        let (open, idle) = match (&self.postgres, self.db.get_database_backend()) {
            (Some(postgres), _) => postgres.stats(),
            (None, DatabaseBackend::Postgres) => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            (None, DatabaseBackend::Sqlite) => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => (0, 0),
        };
        PoolStats {
            open,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max: self.max_connections,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("the database did not answer")]
    Failed(#[source] DbErr),
    #[error("the database did not answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

/// The user's row, at most one, as SeaORM's `one` asks for it.
fn find(username: &str) -> Select<users::Entity> {
    users::Entity::find_by_id(username.to_owned()).limit(FIND_LIMIT)
}

const FIND_LIMIT: u64 = 1;

/// The statement of [`Store::save_birthday`].
fn upsert(
    username: &str,
    date_of_birth: NaiveDate,
    now: DateTime<Utc>,
) -> Insert<users::ActiveModel> {
    let user = users::ActiveModel {
        username: Set(username.to_owned()),
        date_of_birth: Set(date_of_birth),
        updated_at: Set(now),
    };
    users::Entity::insert(user).on_conflict(
        OnConflict::column(users::Column::Username)
            .update_columns([users::Column::DateOfBirth, users::Column::UpdatedAt])
            .to_owned(),
    )
}

// The SQL of the two statements requests run on PostgreSQL, built by SeaORM once: it is the
// same for every request, and only the values are bound per request. Building the statements
// per request was about a tenth of the service's instructions per GET (docs/service.md). The
// tests check that each statement equals what SeaORM builds for the same values.
static FIND_SQL: LazyLock<String> = LazyLock::new(|| find("").build(DatabaseBackend::Postgres).sql);
static UPSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    upsert("", NaiveDate::MIN, DateTime::<Utc>::MIN_UTC)
        .build(DatabaseBackend::Postgres)
        .sql
});

/// [`find`] on PostgreSQL, from the SQL built once.
fn find_statement(username: &str) -> Statement {
    postgres_statement(&FIND_SQL, vec![username.into(), FIND_LIMIT.into()])
}

/// [`upsert`] on PostgreSQL, from the SQL built once.
fn upsert_statement(username: &str, date_of_birth: NaiveDate, now: DateTime<Utc>) -> Statement {
    postgres_statement(
        &UPSERT_SQL,
        vec![username.into(), date_of_birth.into(), now.into()],
    )
}

fn postgres_statement(sql: &str, values: Vec<Value>) -> Statement {
    Statement {
        sql: sql.to_owned(),
        values: Some(Values(values)),
        db_backend: DatabaseBackend::Postgres,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statements_built_once_are_the_ones_seaorm_builds_per_request() {
        let date = NaiveDate::from_ymd_opt(1990, 5, 17).unwrap();
        let now = Utc::now();
        for username in ["Ann", "b"] {
            assert_eq!(
                find_statement(username),
                find(username).build(DatabaseBackend::Postgres)
            );
            assert_eq!(
                upsert_statement(username, date, now),
                upsert(username, date, now).build(DatabaseBackend::Postgres)
            );
        }
    }
}
