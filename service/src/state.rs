//! What every handler can reach. Its own module, so that `routes` and `startup` (which builds
//! the state and serves the routes) do not import each other.

use std::{sync::Arc, time::Duration};

use crate::{clock::Clock, database_check::DatabaseStatus, lifecycle::Lifecycle, store::Store};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub lifecycle: Lifecycle,
    /// The database's state as the last background check saw it.
    pub database: DatabaseStatus,
    /// Bound on each background check of the database.
    pub database_check_timeout: Duration,
    pub request_timeout: Duration,
}
