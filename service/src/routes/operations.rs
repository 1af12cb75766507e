//! `GET /metrics` (on its own port) and `GET /openapi.json`.

use std::sync::{Arc, LazyLock};

use axum::{Json, extract::State, http::header, response::IntoResponse};
use utoipa::openapi::OpenApi;

use crate::{metrics, state::AppState};

/// Prometheus metrics: requests by route and status, latency, database pool and state, build.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(state.store.pool_stats(), state.database.get()),
    )
}

/// This document: the OpenAPI 3 description of the API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json", body = Object)))]
pub async fn openapi() -> Json<Arc<OpenApi>> {
    Json(Arc::clone(&DOCUMENT))
}

/// Made on first use, for this route only: as an extension layered over the router, the
/// document was cloned into every request's extensions.
static DOCUMENT: LazyLock<Arc<OpenApi>> = LazyLock::new(|| Arc::new(super::openapi()));
