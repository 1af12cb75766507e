//! `GET /healthz` (the process runs) and `GET /readyz` (it should get traffic).

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{build_info, error::ApiError, error::ErrorBody, state::AppState};

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

/// Readiness: 200 only when the database answers and the process is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = Ready),
        (status = 503, description = "Draining, or the database does not answer", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError::NotReady(
            "draining: the service is shutting down".to_owned(),
        ));
    }
    if let Err(error) = state.store.ping(state.readiness_timeout).await {
        match std::error::Error::source(&error) {
            Some(cause) => tracing::warn!(%error, %cause, "not ready"),
            None => tracing::warn!(%error, "not ready"),
        }
        return Err(ApiError::NotReady(error.to_string()));
    }
    Ok(Json(Ready {
        status: "ready".to_owned(),
    }))
}
