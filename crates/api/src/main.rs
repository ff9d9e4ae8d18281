//! `dispatch-api`: loads configuration and runs the API or a migration command.

use clap::Parser;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = dispatch_api::cli::Cli::parse();
    match dispatch_api::cli::run(cli).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dispatch-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
