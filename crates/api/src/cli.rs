//! The `dispatch-api` command line: `serve` (default), `migrate up|down|status`,
//! `secrets status|reseal`, `admin replay|purge|stats|check-config` and `openapi`.

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
    /// Count the stored subscription secrets by key, or re-seal them under the active key of
    /// secret_keys (docs/operations.md, "Rotating the secret keys").
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Operator commands on the database: replay, purge, stats; and check-config. They need
    /// only DATABASE_URL (docs/operations.md).
    Admin {
        #[command(subcommand)]
        command: crate::admin::Command,
    },
    /// Print the OpenAPI document (the content of docs/openapi.json) and exit.
    Openapi,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum SecretsAction {
    /// Count stored secrets by slot (current, previous) and key id, and those still in
    /// plaintext; warn about key ids missing from secret_keys.
    Status,
    /// Re-seal every secret not sealed under the first key of secret_keys (plaintext ones
    /// included, which are then cleared) and drop expired previous secrets. Safe while Dispatch
    /// runs; exits 1 if a secret could not be opened.
    Reseal {
        /// Subscriptions read per batch.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: i64,
    },
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

/// Runs a `secrets` action against the API's database with its keyring, printing what it found
/// or did (key ids and counts only, never a secret or a key).
pub async fn secrets(settings: &Settings, action: SecretsAction) -> anyhow::Result<()> {
    use dispatch_store::pool::{build_pool, connection};
    use dispatch_store::queries::subscriptions;

    let keys = &settings.secret_keys;
    let pool = build_pool(&settings.database);
    let mut conn = connection(&pool)
        .await
        .context("connecting to the database")?;
    match action {
        SecretsAction::Status => {
            let usage = subscriptions::secret_usage(&mut conn)
                .await
                .context("counting the stored secrets")?;
            println!(
                "secret_keys: {}",
                dispatch_config::report::key_ids(keys.ids())
            );
            if usage.is_empty() {
                println!("no stored secrets");
            }
            for u in &usage {
                println!(
                    "{:<9}  {:<32}  {}",
                    u.slot,
                    u.key_id.as_deref().unwrap_or("-"),
                    u.subscriptions
                );
            }
            let missing: Vec<&str> = usage
                .iter()
                .filter_map(|u| u.key_id.as_deref())
                .filter(|id| !keys.ids().any(|k| k == *id))
                .collect();
            if !missing.is_empty() {
                println!(
                    "warning: secrets sealed with {} cannot be opened: that key is not in \
                     secret_keys (their deliveries fail with secret_unavailable)",
                    missing.join(", ")
                );
            }
            let stale = usage
                .iter()
                .filter(|u| u.key_id.as_deref() != Some(keys.active_id()))
                .map(|u| u.subscriptions)
                .sum::<i64>();
            if stale > 0 {
                println!(
                    "{stale} stored secret(s) are not sealed under {:?}: run `dispatch-api secrets \
                     reseal`",
                    keys.active_id()
                );
            }
        }
        SecretsAction::Reseal { batch_size } => {
            let report = subscriptions::reseal(&mut conn, keys, batch_size)
                .await
                .context("re-sealing the stored secrets")?;
            println!(
                "re-sealed {} subscription(s) under key {:?} ({} from plaintext); dropped {} \
                 expired previous secret(s); {} changed meanwhile (left as they were)",
                report.rewritten,
                keys.active_id(),
                report.from_plaintext,
                report.expired_dropped,
                report.changed_meanwhile
            );
            for (id, error) in &report.failed {
                println!("cannot re-seal subscription {id:?}: {error}");
            }
            if !report.failed.is_empty() {
                anyhow::bail!(
                    "{} subscription(s) could not be re-sealed: put the key they name back into \
                     secret_keys and run again",
                    report.failed.len()
                );
            }
        }
    }
    Ok(())
}

/// Runs the command; `Ok(false)` when it found a problem it has already reported (exit 1
/// without another message: `admin check-config` on an invalid configuration).
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command.unwrap_or(Command::Serve) {
        // Needs no configuration: the document depends on the code only.
        Command::Openapi => {
            print!("{}", crate::openapi::pretty_json());
            Ok(true)
        }
        // Needs only the database: a migration job carries no API or sealing keys.
        Command::Migrate { action } => {
            let (url, log_format) =
                Settings::load_for_migrations(cli.config.as_deref(), &std::env::vars().collect())?;
            let _telemetry = dispatch_telemetry::init("dispatch-api", log_format);
            migrate(&url, action).await.map(|()| true)
        }
        // Needs only the database too (check-config: the configuration it checks).
        Command::Admin { command } => {
            let env = std::env::vars().collect();
            crate::admin::run(command, cli.config.as_deref(), &env).await
        }
        Command::Secrets { action } => {
            let settings = Settings::load(cli.config.as_deref())?;
            let _telemetry = dispatch_telemetry::init("dispatch-api", settings.log_format);
            secrets(&settings, action).await.map(|()| true)
        }
        Command::Serve => serve(cli.config.as_deref()).await.map(|()| true),
    }
}

/// Runs the API until SIGTERM/SIGINT.
async fn serve(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    // Held until the server stopped: dropping it flushes the spans still buffered.
    let _telemetry = dispatch_telemetry::init("dispatch-api", settings.log_format);
    let app =
        Application::build(&settings).with_context(|| format!("binding {}", settings.addr))?;
    tracing::info!(addr = %settings.addr, port = app.port(), "dispatch-api listening");
    if settings.auth == crate::auth::Auth::Disabled {
        tracing::warn!(
            "authentication is disabled (DISPATCH_AUTH_DISABLED=true): anyone who can reach \
             this port may call the API"
        );
    }
    app.run_until_stopped().await?;
    tracing::info!("dispatch-api stopped");
    Ok(())
}
