//! `PUT /hello/{username}` saves a date of birth; `GET /hello/{username}` greets.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{BirthdayBody, UsernamePath};
use crate::{domain::Greeting, error::ApiError, error::ErrorBody, state::AppState};

/// The `{username}` path segment, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UsernameParam {
    /// 1 to 64 ASCII letters, case-sensitive (`Ann` and `ann` are two users).
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z]{1,64}$")]
    username: String,
}

/// The body of `PUT /hello/{username}`; no other field is accepted. It is parsed by hand (see
/// `extract`) to name each problem; the serde attributes give the documented schema its
/// field names and `additionalProperties: false`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaveBirthday {
    /// A real calendar date before today (UTC), written YYYY-MM-DD.
    #[schema(format = Date, example = "1990-05-17")]
    pub date_of_birth: String,
}

/// The greeting of `GET /hello/{username}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GreetingBody {
    /// `Hello, <username>! Your birthday is in N day(s)` or `Hello, <username>! Happy birthday!`
    #[schema(example = "Hello, Ann! Your birthday is in 5 day(s)")]
    pub message: String,
}

/// Save or replace a user's date of birth.
#[utoipa::path(
    put,
    path = "/hello/{username}",
    tag = "hello",
    params(UsernameParam),
    request_body(content = SaveBirthday, content_type = "application/json",
                 description = "A missing Content-Type is read as JSON"),
    responses(
        (status = 204, description = "Saved"),
        (status = 400, description = "Bad username, date or body", body = ErrorBody),
        (status = 405, description = "Method not allowed", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Content-Type present and not JSON", body = ErrorBody),
        (status = 503, description = "Database unavailable or request timed out", body = ErrorBody),
    )
)]
pub async fn save_birthday(
    State(state): State<AppState>,
    UsernamePath(username): UsernamePath,
    BirthdayBody(date_of_birth): BirthdayBody,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .save_birthday(&username, date_of_birth, state.clock.now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Greet a user: happy birthday today, or the days left until it.
#[utoipa::path(
    get,
    path = "/hello/{username}",
    tag = "hello",
    params(UsernameParam),
    responses(
        (status = 200, description = "The greeting", body = GreetingBody),
        (status = 400, description = "Bad username", body = ErrorBody),
        (status = 404, description = "No date of birth saved for this username", body = ErrorBody),
        (status = 405, description = "Method not allowed", body = ErrorBody),
        (status = 503, description = "Database unavailable or request timed out", body = ErrorBody),
    )
)]
pub async fn greet(
    State(state): State<AppState>,
    UsernamePath(username): UsernamePath,
) -> Result<Json<GreetingBody>, ApiError> {
    let date_of_birth = state
        .store
        .birthday(&username)
        .await?
        .ok_or_else(|| ApiError::UserNotFound(username.clone()))?;
    let message = Greeting::for_day(date_of_birth, state.clock.today()).message(&username);
    Ok(Json(GreetingBody { message }))
}
