//! The hello service: remembers dates of birth and greets people on their birthday.

pub mod build_info;
pub mod clock;
pub mod commands;
pub mod config;
pub mod database_check;
pub mod domain;
pub mod error;
pub mod healthcheck;
pub mod lifecycle;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
