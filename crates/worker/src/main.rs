//! `dispatch-worker`: parses the command line and runs the delivery loop (until SIGTERM or
//! SIGINT, then drains) or `check-config`; everything else is in [`dispatch_worker::cli`].

use std::process::ExitCode;

use clap::Parser;
use dispatch_worker::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    match cli::run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dispatch-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
