//! What every handler can reach. Its own module, so that `routes` and `startup` (which builds
//! the state and serves the routes) do not import each other.

use std::{sync::Arc, time::Duration};

use crate::{clock::Clock, lifecycle::Lifecycle, store::Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub lifecycle: Lifecycle,
    /// Bound on the database check of /readyz.
    pub readiness_timeout: Duration,
    pub request_timeout: Duration,
}
