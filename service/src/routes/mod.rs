//! The HTTP surface: routes, their OpenAPI description (generated from the same code, so the
//! two cannot drift), and the middleware every request passes through.

mod extract;
mod health;
mod hello;
mod operations;

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{Method, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

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
    let (routes, document) = api_routes().split_for_parts();
    let request_timeout = state.request_timeout;
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            // Outermost first: the id is set before the request is logged, so its line
            // carries it.
            ServiceBuilder::new()
                .layer(middleware::map_request(drop_unsafe_request_id))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                // Failures are logged once more, with their cause, by `ApiError`.
                .layer(middleware::from_fn(telemetry::log_request))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(crate::metrics::track))
                .layer(middleware::from_fn_with_state(
                    request_timeout,
                    limit_duration,
                ))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(Extension(Arc::new(document))),
        )
        .with_state(state)
}

/// Longest `x-request-id` kept from a caller (a UUID is 36 bytes).
const MAX_REQUEST_ID_BYTES: usize = 64;

/// Removes a caller's `x-request-id` unless it is one short value of letters, digits and
/// `-_.:`, so that a new one is made: the id is echoed and logged with every line of the
/// request, and must not let a caller write long or misleading text there.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut ids = headers.get_all(X_REQUEST_ID).iter();
    let safe = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => is_safe_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !safe {
        headers.remove(X_REQUEST_ID);
    }
    request
}

fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
        && id
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(byte))
}

/// Answers 503 when a request takes longer than REQUEST_TIMEOUT, so that nothing hangs when
/// the database does not answer.
async fn limit_duration(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
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
