//! The database's state as the service last saw it. A background task checks it every
//! [`CHECK_INTERVAL`]; `/readyz` reports it in its body and `/metrics` as a gauge.
//!
//! It is reported, never a reason to refuse traffic: every pod shares the one database, so
//! readiness that followed it would mark every pod unready at once during a switchover or a
//! zone's failover, and the load balancer, left with no healthy backend, would answer errors
//! of its own for longer than the database was away. Requests made meanwhile answer the
//! API's documented 503 instead, and succeed again as soon as the database answers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::Store;

/// How often the background task checks the database: one round trip per pod and second, so
/// that the state reported is at most this old (plus the check's own bound).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The outcome of the last check of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseState {
    /// No check has finished yet (the first one starts with the server).
    Unknown,
    /// The last check was answered in time.
    Ok,
    /// The last check failed or was not answered in time.
    Unavailable,
}

impl DatabaseState {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Ok => 1,
            Self::Unavailable => 2,
        }
    }
}

/// The last state seen, shared between the checking task and the handlers.
#[derive(Debug, Clone, Default)]
pub struct DatabaseStatus {
    state: Arc<AtomicU8>,
}

impl DatabaseStatus {
    pub fn get(&self) -> DatabaseState {
        DatabaseState::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// Records `state` and returns the one it replaces.
    fn replace(&self, state: DatabaseState) -> DatabaseState {
        DatabaseState::from_u8(self.state.swap(state.as_u8(), Ordering::SeqCst))
    }
}

/// Checks the database every [`CHECK_INTERVAL`], each check bounded by `bound`, and records
/// the outcome in `status`; logs only the changes. Runs until dropped.
pub async fn watch(store: Store, status: DatabaseStatus, bound: Duration) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.ping(bound).await {
            Ok(()) => {
                if status.replace(DatabaseState::Ok) == DatabaseState::Unavailable {
                    tracing::info!("the database answers again");
                }
            }
            Err(error) => {
                if status.replace(DatabaseState::Unavailable) != DatabaseState::Unavailable {
                    match std::error::Error::source(&error) {
                        Some(cause) => tracing::warn!(%error, %cause, "database unavailable"),
                        None => tracing::warn!(%error, "database unavailable"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_starts_unknown_and_keeps_the_last_outcome() {
        let status = DatabaseStatus::default();
        assert_eq!(status.get(), DatabaseState::Unknown);
        assert_eq!(
            status.replace(DatabaseState::Unavailable),
            DatabaseState::Unknown
        );
        assert_eq!(status.clone().get(), DatabaseState::Unavailable);
        assert_eq!(
            status.replace(DatabaseState::Ok),
            DatabaseState::Unavailable
        );
        assert_eq!(status.get(), DatabaseState::Ok);
    }

    #[test]
    fn states_are_written_in_lowercase() {
        let written: Vec<String> = [
            DatabaseState::Unknown,
            DatabaseState::Ok,
            DatabaseState::Unavailable,
        ]
        .iter()
        .map(|state| serde_json::to_string(state).unwrap())
        .collect();
        assert_eq!(written, [r#""unknown""#, r#""ok""#, r#""unavailable""#]);
    }
}
