//! What build is running: the crate version and the git commit given at build time through
//! the HELLO_GIT_COMMIT environment variable.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn commit() -> &'static str {
    match option_env!("HELLO_GIT_COMMIT") {
        Some(commit) if !commit.trim().is_empty() => commit.trim(),
        _ => "unknown",
    }
}
