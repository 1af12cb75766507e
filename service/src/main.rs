use std::process::ExitCode;

use clap::Parser;
use hello::{commands, config::Cli};

#[tokio::main]
async fn main() -> ExitCode {
    commands::run(Cli::parse()).await
}
