//! `dispatch-api`: loads configuration and runs the API or a migration command.

use clap::Parser;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = dispatch_api::cli::Cli::parse();
    match dispatch_api::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatch-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
