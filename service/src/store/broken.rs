//! Broken pooled connections: telling them from other errors, and checking the connections
//! that may have broken with them before they are used again.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::{
    DbErr, RuntimeErr,
    sqlx::{self, Connection as _, pool::PoolOptions},
};

/// Whether `error` means the connection the statement ran on is unusable (closed by the
/// server, reset, cut off mid-message), so that the same statement may succeed on another.
pub(super) fn is_broken_connection(error: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error))) =
        error
    else {
        return false;
    };
    match error.as_ref() {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        // SQLSTATE class 08 (connection exception), 57P01 and 57P02 (the server terminated
        // the session: shutdown or crash).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code == "57P01" || code == "57P02"),
        _ => false,
    }
}

/// When a connection was last found broken. Every idle connection passed sqlx's check when it
/// was returned to the pool, so only those idle since before the last failure are suspect:
/// they are pinged before being handed out, the others are handed out as they are.
#[derive(Debug)]
pub(super) struct ConnectionFailures {
    since: Instant,
    /// Nanoseconds from `since` to the last failure; 0 for none yet.
    last: AtomicU64,
}

impl Default for ConnectionFailures {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl ConnectionFailures {
    pub(super) fn record(&self) {
        let nanos = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos.max(1), Ordering::Relaxed);
    }

    /// How long ago a connection was last found broken.
    fn time_since_last(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(
                self.since
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(nanos)),
            ),
        }
    }

    /// Adds to `pool` the check of suspect connections before they are handed out; one that
    /// fails it is closed and the pool opens a new one.
    pub(super) fn check_before_acquire<DB: sqlx::Database>(
        self: &Arc<Self>,
        pool: PoolOptions<DB>,
    ) -> PoolOptions<DB> {
        let failures = Arc::clone(self);
        pool.before_acquire(move |connection, metadata| {
            let suspect = failures
                .time_since_last()
                .is_some_and(|since| metadata.idle_for >= since);
            Box::pin(async move {
                if suspect {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn query_error(error: sqlx::Error) -> DbErr {
        DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)))
    }

    #[test]
    fn a_closed_or_cut_connection_is_broken() {
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
        ] {
            assert!(is_broken_connection(&query_error(sqlx::Error::Io(
                kind.into()
            ))));
        }
        assert!(is_broken_connection(&query_error(sqlx::Error::Protocol(
            "unexpected message".into()
        ))));
    }

    #[test]
    fn other_errors_are_not_retried() {
        assert!(!is_broken_connection(&query_error(
            sqlx::Error::PoolTimedOut
        )));
        assert!(!is_broken_connection(&query_error(
            sqlx::Error::RowNotFound
        )));
        assert!(!is_broken_connection(&DbErr::RecordNotInserted));
        assert!(!is_broken_connection(&DbErr::Custom("x".into())));
    }

    #[test]
    fn no_connection_is_suspect_before_a_failure() {
        let failures = ConnectionFailures::default();
        assert_eq!(failures.time_since_last(), None);
        failures.record();
        assert!(
            failures
                .time_since_last()
                .is_some_and(|since| since < Duration::from_secs(5))
        );
    }
}
