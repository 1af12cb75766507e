//! The HTTP API over real sockets, against SQLite and PostgreSQL.

#[path = "../common/mod.rs"]
mod common;

mod errors;
mod greetings;
mod lifecycle;
mod operations;
mod schema;
