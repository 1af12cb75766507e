//! Extractors that turn raw requests into domain values, reporting bad input as [`ApiError`]
//! like every other error.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{StatusCode, header::CONTENT_TYPE, request::Parts},
};
use serde_json::Value;

use super::hello::SaveBirthday;
use crate::{
    domain::{DateOfBirth, Username},
    error::ApiError,
    state::AppState,
};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

const EXPECTED_BODY: &str = r#"send {"dateOfBirth": "YYYY-MM-DD"}"#;

/// The `{username}` segment of the path, parsed.
pub struct UsernamePath(pub Username);

impl<S: Send + Sync> FromRequestParts<S> for UsernamePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::BadRequest(format!(
                    "username must be 1 to 64 ASCII letters (A-Z, a-z): {}",
                    rejection.body_text()
                ))
            })?;
        Ok(Self(Username::parse(&raw)?))
    }
}

/// The body of `PUT /hello/{username}`, parsed: a date of birth before today.
pub struct BirthdayBody(pub DateOfBirth);

impl FromRequest<AppState> for BirthdayBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
            let content_type = String::from_utf8_lossy(content_type.as_bytes()).into_owned();
            if !is_json(&content_type) {
                return Err(ApiError::UnsupportedMediaType(content_type));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::BodyTooLarge {
                        limit: MAX_BODY_BYTES,
                    }
                } else {
                    ApiError::BadRequest(format!(
                        "could not read the body: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        let raw = date_of_birth_field(&bytes)?;
        Ok(Self(DateOfBirth::parse(&raw, state.clock.today())?))
    }
}

/// A missing Content-Type is read as JSON; otherwise it must be JSON (`application/json` or an
/// `application/*+json` type), with any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The `dateOfBirth` string of a body that must be exactly `{"dateOfBirth": "..."}`.
fn date_of_birth_field(body: &[u8]) -> Result<String, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::BadRequest(format!(
            "the body is not valid JSON ({error}): {EXPECTED_BODY}"
        ))
    })?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::BadRequest(format!(
            "the body must be a JSON object: {EXPECTED_BODY}"
        )));
    };
    let date_of_birth = fields.remove("dateOfBirth");
    if !fields.is_empty() {
        let unknown: Vec<&str> = fields.keys().map(String::as_str).collect();
        return Err(ApiError::BadRequest(format!(
            "unknown field(s) {}: the body takes only dateOfBirth",
            unknown.join(", ")
        )));
    }
    match date_of_birth {
        // `Value` keeps the last of repeated names, so `{"dateOfBirth": "a", "dateOfBirth": "b"}`
        // would pass unnoticed; the typed body refuses it (nothing else is left to refuse here).
        Some(Value::String(_)) => serde_json::from_slice::<SaveBirthday>(body)
            .map(|typed| typed.date_of_birth)
            .map_err(|_| {
                ApiError::BadRequest(format!("dateOfBirth must be given once: {EXPECTED_BODY}"))
            }),
        None => Err(ApiError::BadRequest(format!(
            "dateOfBirth is missing: {EXPECTED_BODY}"
        ))),
        Some(other) => Err(ApiError::BadRequest(format!(
            "dateOfBirth must be a string written YYYY-MM-DD; got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "text/json",
            "application/jsonx",
            "",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    fn error_of(body: &str) -> String {
        match date_of_birth_field(body.as_bytes()) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn reads_the_date_string() {
        assert_eq!(
            date_of_birth_field(br#"{"dateOfBirth": "1990-05-17"}"#).unwrap(),
            "1990-05-17"
        );
        assert_eq!(
            date_of_birth_field(br#" {"dateOfBirth":"x"} "#).unwrap(),
            "x"
        );
    }

    #[test]
    fn refuses_other_bodies_naming_what_to_fix() {
        let cases = [
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            ("dateOfBirth=1990-05-17", "not valid JSON"),
            (r#"{"dateOfBirth": "1990-05-17",}"#, "not valid JSON"),
            ("null", "must be a JSON object"),
            (r#"["1990-05-17"]"#, "must be a JSON object"),
            (r#""1990-05-17""#, "must be a JSON object"),
            ("{}", "dateOfBirth is missing"),
            (
                r#"{"date_of_birth": "1990-05-17"}"#,
                "unknown field(s) date_of_birth",
            ),
            (
                r#"{"dateOfBirth": "1990-05-17", "name": "Ann"}"#,
                "unknown field(s) name",
            ),
            (
                r#"{"dateOfBirth": 19900517}"#,
                "dateOfBirth must be a string",
            ),
            (r#"{"dateOfBirth": null}"#, "dateOfBirth must be a string"),
            (
                r#"{"dateOfBirth": "1990-05-17", "dateOfBirth": "1991-05-17"}"#,
                "dateOfBirth must be given once",
            ),
            (
                r#"{"dateOfBirth": ["1990-05-17"]}"#,
                "dateOfBirth must be a string",
            ),
        ];
        for (body, expected) in cases {
            let message = error_of(body);
            assert!(message.contains(expected), "{body}: {message}");
        }
    }
}
