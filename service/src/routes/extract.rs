//! Extractors that turn raw requests into domain values, reporting bad input as [`ApiError`]
//! like every other error.

use std::{fmt, marker::PhantomData};

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{StatusCode, header::CONTENT_TYPE, request::Parts},
};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor, value::MapAccessDeserializer},
};
use serde_json::error::Category;

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
        let body = parse_body(&bytes)?;
        Ok(Self(body.into_date_of_birth(state.clock.today())?))
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

/// The body, read once: a JSON object that serde turns into [`SaveBirthday`], or the
/// contract's message for the first thing wrong with it.
fn parse_body(body: &[u8]) -> Result<SaveBirthday, ApiError> {
    serde_json::from_slice::<JsonObject<SaveBirthday>>(body)
        .map(|JsonObject(body)| body)
        .map_err(|error| ApiError::BadRequest(body_error_message(&error)))
}

/// A `T` given as a JSON object only. Serde's derived structs also take a JSON array of their
/// fields' values (`["1990-05-17"]`), which the contract refuses.
struct JsonObject<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = JsonObject<T>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str(AN_OBJECT)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(JsonObject)
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// What [`JsonObject`] expects, as serde words it in an "invalid type" error.
const AN_OBJECT: &str = "a JSON object";

/// The contract's message for a body serde refused. Syntax errors are reported with serde_json's
/// own words and position; the others are recognised by the wording of serde's `de::Error`
/// (unknown, duplicate and missing fields, values of the wrong type), which serde_json
/// follows with the position.
fn body_error_message(error: &serde_json::Error) -> String {
    if error.classify() != Category::Data {
        return format!("the body is not valid JSON ({error}): {EXPECTED_BODY}");
    }
    let full = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&position).unwrap_or(&full);
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.rsplit_once("`, expected "))
        .map(|(field, _)| field)
    {
        format!("unknown field(s) {field}: the body takes only dateOfBirth")
    } else if message.starts_with("duplicate field `") {
        format!("dateOfBirth must be given once: {EXPECTED_BODY}")
    } else if message.starts_with("missing field `") {
        format!("dateOfBirth is missing: {EXPECTED_BODY}")
    } else if let Some(got) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.strip_suffix(", expected a string"))
    {
        format!(
            "dateOfBirth must be a string written YYYY-MM-DD; got {}",
            as_json(got)
        )
    } else if message.ends_with(&format!(", expected {AN_OBJECT}")) {
        format!("the body must be a JSON object: {EXPECTED_BODY}")
    } else {
        format!("{message}: {EXPECTED_BODY}")
    }
}

/// Serde's description of an unexpected value (`integer `1990``, `map`) in JSON's words.
fn as_json(unexpected: &str) -> &str {
    match unexpected {
        "map" => "an object",
        "sequence" => "an array",
        other => other
            .split_once(" `")
            .and_then(|(_, value)| value.strip_suffix('`'))
            .unwrap_or(other),
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
        match parse_body(body.as_bytes()) {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn reads_the_date_string() {
        for (body, date_of_birth) in [
            (r#"{"dateOfBirth": "1990-05-17"}"#, "1990-05-17"),
            (" {\"dateOfBirth\":\"x\"}\n", "x"),
            (r#"{"dateOfBirth": "\u0031990-05-17"}"#, "1990-05-17"),
        ] {
            assert_eq!(
                parse_body(body.as_bytes()).unwrap().date_of_birth,
                date_of_birth
            );
        }
    }

    /// One case per class of error, with the whole message the contract gives.
    #[test]
    fn refuses_other_bodies_naming_what_to_fix() {
        let expected = r#"send {"dateOfBirth": "YYYY-MM-DD"}"#;
        let not_json = |detail: &str| format!("the body is not valid JSON ({detail}): {expected}");
        let not_a_string =
            |got: &str| format!("dateOfBirth must be a string written YYYY-MM-DD; got {got}");
        let not_an_object = format!("the body must be a JSON object: {expected}");
        let cases = [
            ("", not_json("EOF while parsing a value at line 1 column 0")),
            (
                "{",
                not_json("EOF while parsing an object at line 1 column 1"),
            ),
            (
                "dateOfBirth=1990-05-17",
                not_json("expected value at line 1 column 1"),
            ),
            (
                r#"{"dateOfBirth": "1990-05-17",}"#,
                not_json("trailing comma at line 1 column 30"),
            ),
            (
                r#"{"dateOfBirth": "1990-05-17"} {}"#,
                not_json("trailing characters at line 1 column 31"),
            ),
            (
                "nul",
                not_json("EOF while parsing a value at line 1 column 3"),
            ),
            (
                r#"{"dateOfBirth": 1e999}"#,
                not_json("number out of range at line 1 column 21"),
            ),
            ("null", not_an_object.clone()),
            ("true", not_an_object.clone()),
            ("17", not_an_object.clone()),
            (r#""1990-05-17""#, not_an_object.clone()),
            (r#"["1990-05-17"]"#, not_an_object.clone()),
            ("[]", not_an_object),
            ("{}", format!("dateOfBirth is missing: {expected}")),
            (
                r#"{"date_of_birth": "1990-05-17"}"#,
                "unknown field(s) date_of_birth: the body takes only dateOfBirth".to_owned(),
            ),
            (
                r#"{"dateOfBirth": "1990-05-17", "a`b, expected ": 1}"#,
                "unknown field(s) a`b, expected : the body takes only dateOfBirth".to_owned(),
            ),
            (
                r#"{"dateOfBirth": "1990-05-17", "dateOfBirth": "1991-05-17"}"#,
                format!("dateOfBirth must be given once: {expected}"),
            ),
            (r#"{"dateOfBirth": 19900517}"#, not_a_string("19900517")),
            (r#"{"dateOfBirth": -1.5}"#, not_a_string("-1.5")),
            (r#"{"dateOfBirth": true}"#, not_a_string("true")),
            (r#"{"dateOfBirth": null}"#, not_a_string("null")),
            (
                r#"{"dateOfBirth": ["1990-05-17"]}"#,
                not_a_string("an array"),
            ),
            (
                r#"{"dateOfBirth": {"year": 1990}}"#,
                not_a_string("an object"),
            ),
        ];
        for (body, message) in cases {
            assert_eq!(error_of(body), message, "{body}");
        }
    }
}
