//! Schema migrations of the hello service, applied by `hello migrate` and, unless
//! `MIGRATE_ON_START=false`, by `hello serve` before it listens.
//!
//! Migrations that run before a blue-green switch must be additive (expand/contract), so the
//! live release keeps working against the new schema.

pub use sea_orm_migration::prelude::*;

mod m20261128_000001_create_users;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261128_000001_create_users::Migration)]
    }
}
