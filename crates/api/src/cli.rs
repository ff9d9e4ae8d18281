//! The `dispatch-api` command line: `serve` (default), `migrate up|down|status` and `openapi`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dispatch_store::migrations;

use crate::{Application, Settings};

#[derive(Debug, Parser)]
#[command(name = "dispatch-api", version, about = "Dispatch's ingestion API")]
pub struct Cli {
    /// Optional TOML configuration file (overridden by the environment).
    #[arg(long, env = "DISPATCH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply, revert or list the database migrations built into this binary.
    Migrate {
        #[arg(value_enum)]
        action: MigrateAction,
    },
    /// Print the OpenAPI document (the content of docs/openapi.json) and exit.
    Openapi,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the most recent migration.
    Down,
    /// List migrations and whether each is applied.
    Status,
}

/// Runs a migration action against `database_url`, printing what happened.
pub async fn migrate(database_url: &str, action: MigrateAction) -> anyhow::Result<()> {
    match action {
        MigrateAction::Up => {
            let applied = migrations::run_pending(database_url)
                .await
                .context("applying migrations")?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for version in applied {
                println!("applied {version}");
            }
        }
        MigrateAction::Down => {
            let version = migrations::revert_last(database_url)
                .await
                .context("reverting the last migration")?;
            println!("reverted {version}");
        }
        MigrateAction::Status => {
            for m in migrations::status(database_url)
                .await
                .context("reading migration status")?
            {
                println!("{} {}", if m.applied { "[x]" } else { "[ ]" }, m.name);
            }
        }
    }
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let action = match cli.command.unwrap_or(Command::Serve) {
        // Needs no configuration: the document depends on the code only.
        Command::Openapi => {
            print!("{}", crate::openapi::pretty_json());
            return Ok(());
        }
        Command::Serve => None,
        Command::Migrate { action } => Some(action),
    };
    let settings = Settings::load(cli.config.as_deref())?;
    // Held until the server stopped: dropping it flushes the spans still buffered.
    let _telemetry = dispatch_telemetry::init("dispatch-api", settings.log_format);
    match action {
        None => {
            let app = Application::build(&settings)
                .with_context(|| format!("binding {}", settings.addr))?;
            tracing::info!(addr = %settings.addr, port = app.port(), "dispatch-api listening");
            if settings.auth == crate::auth::Auth::Disabled {
                tracing::warn!(
                    "authentication is disabled (DISPATCH_AUTH_DISABLED=true): anyone who can \
                     reach this port may call the API"
                );
            }
            app.run_until_stopped().await?;
            tracing::info!("dispatch-api stopped");
            Ok(())
        }
        Some(action) => migrate(&settings.database.url, action).await,
    }
}
