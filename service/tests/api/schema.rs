//! The PostgreSQL schema other tools rely on (backups, restore drills): table `users` and
//! SeaORM's `seaql_migrations`.

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

use crate::common::{Backend, spawn_app};

#[tokio::test]
async fn postgres_has_the_agreed_users_table() {
    let app = spawn_app(Backend::Postgres).await;
    app.put_birthday("Ann", "1990-06-16")
        .await
        .error_for_status()
        .unwrap();
    let db = Database::connect(&app.database.url).await.unwrap();
    let query = |sql: &str| Statement::from_string(DbBackend::Postgres, sql.to_owned());

    let columns = db
        .query_all_raw(query(
            "select column_name, data_type, is_nullable from information_schema.columns \
             where table_schema = 'public' and table_name = 'users' order by ordinal_position",
        ))
        .await
        .unwrap();
    let columns: Vec<(String, String, String)> = columns
        .iter()
        .map(|row| {
            (
                row.try_get("", "column_name").unwrap(),
                row.try_get("", "data_type").unwrap(),
                row.try_get("", "is_nullable").unwrap(),
            )
        })
        .collect();
    let expected = [
        ("username", "text", "NO"),
        ("date_of_birth", "date", "NO"),
        ("updated_at", "timestamp with time zone", "NO"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(columns, expected);

    let primary_key = db
        .query_one_raw(query(
            "select a.attname as column_name from pg_index i \
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
             where i.indrelid = 'users'::regclass and i.indisprimary",
        ))
        .await
        .unwrap()
        .expect("a primary key");
    assert_eq!(
        primary_key.try_get::<String>("", "column_name").unwrap(),
        "username"
    );

    let migrations = db
        .query_one_raw(query("select count(*) as applied from seaql_migrations"))
        .await
        .unwrap()
        .expect("a count");
    assert_eq!(migrations.try_get::<i64>("", "applied").unwrap(), 1);
    let rows = db
        .query_one_raw(query("select count(*) as users from users"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.try_get::<i64>("", "users").unwrap(), 1);
}

/// Readers must not wait for the writer, and a commit must cost one sync: the service opens
/// SQLite files in write-ahead-log mode (a setting SQLite keeps in the file).
#[tokio::test]
async fn sqlite_files_are_opened_in_write_ahead_log_mode() {
    let app = spawn_app(Backend::Sqlite).await;
    app.put_birthday("Ann", "1990-06-16")
        .await
        .error_for_status()
        .unwrap();
    // A plain connection, without the service's options, reads the mode stored in the file.
    let db = Database::connect(&app.database.url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "pragma journal_mode".to_owned(),
        ))
        .await
        .unwrap()
        .expect("pragma journal_mode answers one row");
    let mode: String = row.try_get("", "journal_mode").unwrap();
    assert_eq!(mode, "wal");
}
