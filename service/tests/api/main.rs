//! The service over real sockets: the HTTP API against SQLite and PostgreSQL, the binary as
//! deployed, and the database going away under it. One test binary, so that the release build
//! the tests share with the service links the test code once.

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod errors;
mod greetings;
mod lifecycle;
mod operations;
mod outage;
mod schema;
