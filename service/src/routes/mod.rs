//! The HTTP surface: routes, their OpenAPI description (generated from the same code, so the
//! two cannot drift), and the middleware every request passes through.

mod extract;
mod health;
mod hello;
mod operations;

use std::time::{Duration, Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub use extract::MAX_BODY_BYTES;
pub use health::{Health, Ready};
pub use hello::{GreetingBody, SaveBirthday};

use crate::{
    domain::UsernameError,
    error::ApiError,
    error::ErrorBody,
    state::AppState,
    telemetry::{self, X_REQUEST_ID},
};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "hello", description = "Remembers birthdays and greets people on them"),
    components(schemas(ErrorBody)),
    tags(
        (name = "hello", description = "Birthdays and greetings"),
        (name = "operations", description = "Health, readiness and this document"),
    )
)]
struct ApiDoc;

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(hello::save_birthday, hello::greet))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(operations::openapi))
}

/// The OpenAPI 3 document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// `GET /metrics` alone, served on METRICS_ADDR: no route to the API reaches it.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(operations::metrics))
        .with_state(state)
}

/// The whole application, ready to serve.
pub fn router(state: AppState) -> Router {
    let request_timeout = state.request_timeout;
    Router::from(api_routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            // Outermost first.
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(request_timeout, around))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

/// Longest `x-request-id` kept from a caller (a UUID is 36 bytes).
const MAX_REQUEST_ID_BYTES: usize = 64;

/// What every request passes through, in one middleware (one layer per step moved the request's
/// whole future once per layer): its id, kept or made ([`request_id`]), set on the request and
/// echoed on the response; REQUEST_TIMEOUT, past which it answers 503 so that nothing hangs when
/// the database does not answer; then its metrics and its log line.
async fn around(State(limit): State<Duration>, mut request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    request.headers_mut().insert(X_REQUEST_ID, id.clone());
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let mut response = telemetry::serving(id.clone(), async {
        match tokio::time::timeout(limit, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::Timeout(limit).into_response(),
        }
    })
    .await;
    let elapsed = started.elapsed();
    crate::metrics::record(&method, route.as_ref(), response.status(), elapsed);
    telemetry::log_answered(&method, route.as_ref(), response.status(), elapsed, &id);
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// The request's id: the caller's `x-request-id` when it is one short value of letters, digits
/// and `-_.:`, else a new UUID. The id is echoed and logged with every line of the request, and
/// must not let a caller write long or misleading text there.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    match (ids.next(), ids.next()) {
        (Some(id), None) if is_safe_request_id(id.as_bytes()) => id.clone(),
        _ => {
            let mut buffer = Uuid::encode_buffer();
            let id = Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
            HeaderValue::from_str(id).expect("a UUID is a valid header value")
        }
    }
}

fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
        && id
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(byte))
}

async fn route_not_found(uri: Uri) -> ApiError {
    // `/hello/` is the greeting route with an empty username, not an unknown path.
    if uri.path() == "/hello/" {
        return ApiError::InvalidUsername(UsernameError::Empty);
    }
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_ids_of_safe_characters_are_kept() {
        let kept = [
            "trace-me-42",
            "0af7651916cd43dd8448eb211c80319c",
            "a",
            "x.y:z_1",
        ];
        for id in kept {
            assert!(is_safe_request_id(id.as_bytes()), "{id}");
        }
        let long = "a".repeat(MAX_REQUEST_ID_BYTES + 1);
        let dropped = [
            "",
            "two words",
            "quote\"",
            "line\nbreak",
            "ünï",
            "{}",
            long.as_str(),
        ];
        for id in dropped {
            assert!(!is_safe_request_id(id.as_bytes()), "{id}");
        }
        assert!(is_safe_request_id(
            "a".repeat(MAX_REQUEST_ID_BYTES).as_bytes()
        ));
    }
}
