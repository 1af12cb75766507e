//! `PUT /hello/{username}` saves a date of birth; `GET /hello/{username}` greets.

use std::sync::LazyLock;

use axum::{Json, extract::State, http::StatusCode};
use chrono::NaiveDate;
use regex::Regex;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::{Validate, ValidationErrors};

use super::extract::{BirthdayBody, UsernamePath};
use crate::{
    domain::{DateOfBirth, DateOfBirthError, Greeting},
    error::{ApiError, ErrorBody},
    state::AppState,
};

/// The `{username}` path segment, as documented.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct UsernameParam {
    /// 1 to 64 ASCII letters, case-sensitive (`Ann` and `ann` are two users).
    #[param(min_length = 1, max_length = 64, pattern = "^[A-Za-z]{1,64}$")]
    username: String,
}

/// Four digits, a dash, two digits, a dash, two digits: nothing before or after.
static WRITTEN_YYYY_MM_DD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\z").expect("the pattern is a valid regex")
});

/// The body of `PUT /hello/{username}`: exactly `{"dateOfBirth": "YYYY-MM-DD"}`. Serde
/// refuses any other field; the `validate` attributes declare what the date string must look
/// like; [`SaveBirthday::into_date_of_birth`] then asks the calendar.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaveBirthday {
    /// A real calendar date before today (UTC), written YYYY-MM-DD.
    #[schema(format = Date, example = "1990-05-17")]
    #[validate(regex(path = *WRITTEN_YYYY_MM_DD))]
    pub date_of_birth: String,
}

impl SaveBirthday {
    /// The date of birth the body gives: written YYYY-MM-DD, a real date, before `today`.
    pub fn into_date_of_birth(self, today: NaiveDate) -> Result<DateOfBirth, ApiError> {
        self.validate()
            .map_err(|errors| self.rejected_by(&errors))?;
        Ok(DateOfBirth::parse(&self.date_of_birth, today)?)
    }

    /// The contract's message for the declared constraints that `errors` found broken.
    fn rejected_by(&self, errors: &ValidationErrors) -> ApiError {
        match errors
            .field_errors()
            .keys()
            .next()
            .map(|field| field.as_ref())
        {
            Some("date_of_birth") => DateOfBirthError::Format(self.date_of_birth.clone()).into(),
            _ => ApiError::BadRequest(errors.to_string()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(date_of_birth: &str) -> SaveBirthday {
        SaveBirthday {
            date_of_birth: date_of_birth.to_owned(),
        }
    }

    #[test]
    fn the_date_must_be_written_yyyy_mm_dd() {
        for written in ["1990-05-17", "0001-01-01", "2023-02-29", "9999-99-99"] {
            assert!(body(written).validate().is_ok(), "{written}");
        }
        for other in [
            "",
            "1990-5-17",
            "90-05-17",
            "19900517",
            "1990/05/17",
            "17-05-1990",
            "1990-05-17T00:00:00Z",
            " 1990-05-17",
            "1990-05-17 ",
            "1990-05-17\n",
            "+1990-05-17",
            "１９９０-05-17",
            "1990-05-1a",
        ] {
            let errors = body(other).validate().unwrap_err();
            assert!(
                errors.field_errors().contains_key("date_of_birth"),
                "{other:?}: {errors}"
            );
        }
    }

    /// A broken constraint and each refusal of the calendar answer the contract's messages.
    #[test]
    fn a_body_becomes_a_date_of_birth_before_today() {
        let today = NaiveDate::from_ymd_opt(2024, 6, 15).unwrap();
        assert_eq!(
            body("1990-05-17").into_date_of_birth(today).unwrap().date(),
            NaiveDate::from_ymd_opt(1990, 5, 17).unwrap()
        );
        let refused = [
            (
                "17/05/1990",
                r#"dateOfBirth must be a date written YYYY-MM-DD, for example 1990-05-17; got "17/05/1990""#,
            ),
            (
                "2023-02-29",
                r#"dateOfBirth "2023-02-29" is not a real calendar date"#,
            ),
            (
                "2024-06-15",
                "dateOfBirth 2024-06-15 must be before today (2024-06-15, UTC)",
            ),
        ];
        for (written, message) in refused {
            let error = body(written).into_date_of_birth(today).unwrap_err();
            assert!(
                matches!(error, ApiError::InvalidDateOfBirth(_)),
                "{written}: {error:?}"
            );
            assert_eq!(error.to_string(), message, "{written}");
        }
    }
}
