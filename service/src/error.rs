//! The one error type of the HTTP API. Every error answers a JSON body
//! `{"error": "<message a person can act on>"}`; 5xx bodies say nothing internal, and their cause
//! is logged once, inside the request's span.

use std::time::Duration;

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use sea_orm::{DbErr, RuntimeErr, sqlx};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{DateOfBirthError, Username, UsernameError},
    telemetry::CurrentRequestId,
};

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to change.
    #[schema(
        example = "dateOfBirth must be a date written YYYY-MM-DD, for example 1990-05-17; got \"17/05/1990\""
    )]
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    InvalidUsername(#[from] UsernameError),
    #[error(transparent)]
    InvalidDateOfBirth(#[from] DateOfBirthError),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is over {limit} bytes ({} KiB): send a smaller one", limit / 1024)]
    BodyTooLarge { limit: usize },
    #[error("Content-Type must be application/json (or left out); got {0:?}")]
    UnsupportedMediaType(String),
    #[error("no date of birth is saved for username {0}: save one with PUT /hello/{0}")]
    UserNotFound(Username),
    #[error("no such path {0:?}: see GET /openapi.json for the API")]
    RouteNotFound(String),
    #[error("method {method} is not allowed on {path}: see GET /openapi.json for the API")]
    MethodNotAllowed { method: String, path: String },
    #[error("the database is unavailable: try again shortly")]
    DatabaseUnavailable(#[source] DbErr),
    #[error("the request did not complete within {}: try again shortly", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("{0}")]
    NotReady(String),
    #[error("internal error: try again, and report it if it persists")]
    Internal(#[source] DbErr),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidUsername(_) | Self::InvalidDateOfBirth(_) | Self::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UserNotFound(_) | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::DatabaseUnavailable(_) | Self::Timeout(_) | Self::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<DbErr> for ApiError {
    fn from(error: DbErr) -> Self {
        if is_outage(&error) {
            Self::DatabaseUnavailable(error)
        } else {
            Self::Internal(error)
        }
    }
}

/// Whether a database error means "cannot reach the database right now" (retrying later may
/// work) rather than a fault in this program.
fn is_outage(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE classes 08 (connection exception), 53 (insufficient resources) and
                // 57 (operator intervention: shutdown, recovery) are outages; SQLite's BUSY
                // and LOCKED (5, 6) mean another writer held the file too long.
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || code.starts_with("53")
                        || code.starts_with("57")
                        || code == "5"
                        || code == "6"
                }),
                _ => false,
            }
        }
        _ => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        if status.is_server_error() {
            match std::error::Error::source(&self) {
                Some(cause) => tracing::error!(
                    error = %self,
                    cause = %cause,
                    request_id = %CurrentRequestId,
                    "request failed"
                ),
                None => {
                    tracing::warn!(error = %self, request_id = %CurrentRequestId, "request failed")
                }
            }
        }
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnAcquireErr, RuntimeErr};

    use super::*;

    fn sqlx_error(error: sqlx::Error) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(error)))
    }

    #[test]
    fn outages_are_503_and_faults_500() {
        let outages = [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            DbErr::Conn(RuntimeErr::Internal("refused".to_owned())),
            sqlx_error(sqlx::Error::PoolTimedOut),
            sqlx_error(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset,
            ))),
        ];
        for error in outages {
            assert_eq!(
                ApiError::from(error).status_code(),
                StatusCode::SERVICE_UNAVAILABLE
            );
        }
        let faults = [
            DbErr::Custom("bug".to_owned()),
            DbErr::Query(RuntimeErr::Internal("no such table".to_owned())),
            sqlx_error(sqlx::Error::RowNotFound),
        ];
        for error in faults {
            assert_eq!(
                ApiError::from(error).status_code(),
                StatusCode::INTERNAL_SERVER_ERROR
            );
        }
    }

    #[tokio::test]
    async fn server_errors_say_nothing_internal() {
        let error = ApiError::from(DbErr::Custom(
            "password=hunter2 in some driver text".to_owned(),
        ));
        let response = error.into_response();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "internal error: try again, and report it if it persists"})
        );
    }
}
