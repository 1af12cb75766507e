//! One PostgreSQL container per test binary, started on first use and shared by its tests;
//! each test gets a fresh database in it.
//!
//! The image is HELLO_POSTGRES_IMAGE (`name:tag`), by default the official `postgres:17`.

use std::{process::Command, sync::OnceLock};

use sea_orm::{ConnectionTrait, Database};
use testcontainers::{ContainerAsync, ImageExt, runners::AsyncRunner};
use testcontainers_modules::postgres::Postgres;

pub const DEFAULT_IMAGE: &str = "postgres:17";

/// Where a started PostgreSQL server answers.
pub struct PostgresServer {
    pub host: String,
    pub port: u16,
    pub container_id: String,
}

impl PostgresServer {
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@{}:{}/{database}",
            self.host, self.port
        )
    }

    /// Creates an empty database with a unique name and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(self.url("postgres"))
            .await
            .expect("connect to the postgres database");
        admin
            .execute_unprepared(&format!(r#"CREATE DATABASE "{name}""#))
            .await
            .expect("create a test database");
        admin.close().await.expect("close the admin connection");
        self.url(&name)
    }
}

/// `name:tag` of the image to run (HELLO_POSTGRES_IMAGE, else the official image).
pub fn image() -> (String, String) {
    let image = std::env::var("HELLO_POSTGRES_IMAGE")
        .ok()
        .filter(|image| !image.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    split_image(&image)
}

fn split_image(image: &str) -> (String, String) {
    // The tag follows the last colon after the last slash (a registry may have a port).
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (
            image[..name_start + i].to_owned(),
            image[name_start + i + 1..].to_owned(),
        ),
        None => (image.to_owned(), "latest".to_owned()),
    }
}

/// Starts a container from the configured image; the caller keeps it alive.
pub async fn start_container() -> ContainerAsync<Postgres> {
    let (name, tag) = image();
    Postgres::default()
        .with_name(&name)
        .with_tag(&tag)
        .start()
        .await
        .unwrap_or_else(|error| {
            panic!(
                "cannot start PostgreSQL from image {name}:{tag}: {error}\n\
                 Without a registry, build a local image with scripts/airgap-images and export \
                 what `scripts/airgap-images --print-env` prints (HELLO_POSTGRES_IMAGE)."
            )
        })
}

static SHARED: OnceLock<PostgresServer> = OnceLock::new();

/// The PostgreSQL server shared by every test of this binary.
pub fn shared() -> &'static PostgresServer {
    SHARED.get_or_init(|| {
        // Started on a runtime of its own, which outlives every test's runtime.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime for the container");
            let server = runtime.block_on(async {
                let container = start_container().await;
                let server = PostgresServer {
                    host: container
                        .get_host()
                        .await
                        .expect("container host")
                        .to_string(),
                    port: container
                        .get_host_port_ipv4(5432)
                        .await
                        .expect("container port"),
                    container_id: container.id().to_owned(),
                };
                // Statics are never dropped: keep the handle for good and remove the
                // container when the process exits.
                std::mem::forget(container);
                server
            });
            std::mem::forget(runtime);
            remove_at_exit(&server.container_id);
            server
        })
        .join()
        .expect("start the shared PostgreSQL container")
    })
}

static CONTAINER_TO_REMOVE: OnceLock<String> = OnceLock::new();

fn remove_at_exit(container_id: &str) {
    extern "C" fn remove() {
        if let Some(id) = CONTAINER_TO_REMOVE.get() {
            let _ = Command::new("docker")
                .args(["rm", "--force", "--volumes", id])
                .output();
        }
    }
    if CONTAINER_TO_REMOVE.set(container_id.to_owned()).is_ok() {
        // SAFETY: `remove` is a plain function that only reads a static set above.
        unsafe { libc::atexit(remove) };
    }
}

#[test]
fn image_names_split_into_name_and_tag() {
    let cases = [
        ("postgres:17", ("postgres", "17")),
        ("postgres", ("postgres", "latest")),
        (
            "localhost:5000/hello/postgres:17-airgap",
            ("localhost:5000/hello/postgres", "17-airgap"),
        ),
        (
            "localhost:5000/postgres",
            ("localhost:5000/postgres", "latest"),
        ),
    ];
    for (image, (name, tag)) in cases {
        assert_eq!(
            split_image(image),
            (name.to_owned(), tag.to_owned()),
            "{image}"
        );
    }
}
