//! `GET /healthz` (the process runs) and `GET /readyz` (it can serve: started, not draining).

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    build_info, database_check::DatabaseState, error::ApiError, error::ErrorBody, state::AppState,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    /// The crate version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The git commit built, or `unknown`.
    #[schema(example = "unknown")]
    pub commit: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: String,
    /// The database's state at the last background check (every second): reported, not a
    /// condition of readiness. While it is `unavailable`, requests that need the database
    /// answer 503 `the database is unavailable: try again shortly`.
    pub database: DatabaseState,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: build_info::VERSION.to_owned(),
        commit: build_info::commit().to_owned(),
    })
}

/// Readiness: 200 from the end of start-up until shutdown begins, whatever the database's
/// state, which the body reports (a database shared by every pod must not empty the load
/// balancer). Answered without touching the database.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Serving; the body reports the database's state", body = Ready),
        (status = 503, description = "Starting, or draining after SIGTERM", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::NotReady(
            "draining: the service is shutting down".to_owned(),
        ));
    }
    if !state.lifecycle.is_started() {
        return Err(ApiError::NotReady(
            "starting: the service has not finished starting".to_owned(),
        ));
    }
    Ok(Json(Ready {
        status: "ready".to_owned(),
        database: state.database.get(),
    }))
}
