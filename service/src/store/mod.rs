//! Persistence: saved dates of birth, behind a small interface that speaks in domain types.

mod broken;
mod postgres;
mod users;

use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, Database, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, FromQueryResult, QuerySelect, QueryTrait, Set, sea_query::OnConflict,
};

use crate::{
    config::Settings,
    domain::{DateOfBirth, Username},
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
        let upsert = || {
            let user = users::ActiveModel {
                username: Set(username.as_str().to_owned()),
                date_of_birth: Set(date_of_birth.date()),
                updated_at: Set(now),
            };
            users::Entity::insert(user).on_conflict(
                OnConflict::column(users::Column::Username)
                    .update_columns([users::Column::DateOfBirth, users::Column::UpdatedAt])
                    .to_owned(),
            )
        };
        if let Some(postgres) = &self.postgres {
            let statement = upsert().build(DatabaseBackend::Postgres);
            return self
                .retry_once_if_broken(|| postgres.execute(&statement))
                .await;
        }
        let db = &self.db;
        self.retry_once_if_broken(|| upsert().exec_without_returning(db))
            .await?;
        Ok(())
    }

    pub async fn birthday(&self, username: &Username) -> Result<Option<DateOfBirth>, DbErr> {
        let find = users::Entity::find_by_id(username.as_str().to_owned());
        let user = if let Some(postgres) = &self.postgres {
            // One row at most, as SeaORM's `one` asks for it.
            let statement = find.limit(1).build(DatabaseBackend::Postgres);
            self.retry_once_if_broken(|| postgres.query_one(&statement))
                .await?
                .map(|row| users::Model::from_query_result(&row, ""))
                .transpose()?
        } else {
            let db = &self.db;
            let find = &find;
            self.retry_once_if_broken(|| async move { find.clone().one(db).await })
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
        match self.bounded(operation()).await {
            Err(error) if is_broken_connection(&error) => {
                self.failures.record();
                if let Some(postgres) = &self.postgres {
                    postgres.close_idle();
                }
                tracing::info!(%error, "a pooled database connection was broken: trying another");
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
