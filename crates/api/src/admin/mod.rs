//! Operator commands shipped in the image: `dispatch-api admin replay | purge | stats | keys |
//! tenants | check-config`. The library behind them, also behind `cargo xtask replay | purge | stats |
//! check-config` and `GET /stats`: one code path for each. They need only the database URL
//! (and, for `check-config`, the configuration they check): no API keys, no sealing keys.

pub mod args;
pub mod check_config;
pub mod history;
pub mod keys;
pub mod parse;
pub mod stats;
pub mod stats_text;
pub mod tenants;

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::path::Path;

use anyhow::{Context, bail};
use clap::Subcommand;
use dispatch_store::{AsyncPgConnection, StoreError, connect::establish, migrations};

pub use args::{PurgeArgs, ReplayArgs, StatsArgs};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Re-queue failed deliveries (by event, subscription or failure time) with a fresh retry
    /// schedule.
    Replay(ReplayArgs),
    /// Delete finished events (with their deliveries and attempts) and deleted subscriptions
    /// older than a retention period, in small batches.
    Purge(PurgeArgs),
    /// Backlog, deliveries by status, the last hour's failure rate and each subscription's
    /// circuit, due deliveries and failures (`--json`: what `GET /stats` answers).
    Stats(StatsArgs),
    /// Load and validate the API's configuration as `serve` does, and print the effective
    /// values (secrets masked) or every problem; exits 1 when invalid.
    CheckConfig,
    /// API keys kept in the database: create, list, revoke, rotate (as `/keys` does).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Tenants: create, list, show, set-limits, delete (as `/tenants` does).
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
}

/// Runs `command`; `Ok(false)` when it found a problem it has already reported (an invalid
/// configuration). The database commands read only `database_url` (and `log_format`) from
/// `file` and `env`.
pub async fn run(
    command: Command,
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> anyhow::Result<bool> {
    if let Command::CheckConfig = command {
        let (ok, text) = check_config::check(file, env);
        if ok {
            emit(&mut std::io::stdout().lock(), &text)?;
        } else {
            emit(&mut std::io::stderr().lock(), &text)?;
        }
        return Ok(ok);
    }
    let (url, _) = crate::Settings::load_for_migrations(file, env)?;
    run_on(&url, command).await
}

/// Runs a database command on `database_url`, printing its result on stdout (and the progress
/// of a purge on stderr).
pub async fn run_on(database_url: &str, command: Command) -> anyhow::Result<bool> {
    let mut conn = connect(database_url).await?;
    let out = match command {
        Command::Replay(args) => history::replay(&mut conn, &args).await?,
        Command::Purge(args) => {
            history::purge(&mut conn, &args, |line| eprintln!("purge: {line}")).await?
        }
        Command::Stats(args) => {
            let stats = stats::read(&mut conn).await?;
            if args.json {
                serde_json::to_string_pretty(&stats::StatsView::from(&stats))?
            } else {
                let mut text = stats_text::stats_text(&stats);
                text.pop();
                text
            }
        }
        Command::Keys(command) => keys::run(&mut conn, command).await?,
        Command::Tenants(command) => tenants::run(&mut conn, command).await?,
        Command::CheckConfig => bail!("check-config needs no database"),
    };
    emit(&mut std::io::stdout().lock(), &format!("{out}\n"))?;
    Ok(true)
}

/// Writes `text`; a reader that went away (`… | head`) is not an error, as for any shell tool.
pub fn emit(to: &mut impl Write, text: &str) -> anyhow::Result<()> {
    match to.write_all(text.as_bytes()).and_then(|()| to.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the output"),
    }
}

/// Connects to `url` and makes sure its schema is complete.
pub async fn connect(url: &str) -> anyhow::Result<AsyncPgConnection> {
    let shown = dispatch_store::DatabaseUrl::new(url);
    dispatch_config::check_database_url(url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL {shown}: {e}"))?;
    let mut conn = establish(url)
        .await
        .with_context(|| format!("connecting to {shown}"))?;
    let complete = match migrations::is_up_to_date(&mut conn).await {
        Ok(complete) => complete,
        Err(StoreError::Corrupt {
            what: "migration table",
            ..
        }) => bail!("{shown} has no Dispatch schema: run `dispatch-api migrate up` first"),
        Err(e) => {
            return Err(e).with_context(|| format!("reading the migrations of {shown}"));
        }
    };
    if !complete {
        bail!("{shown} is missing migrations: run `dispatch-api migrate up` first");
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_to_a_reader_that_went_away_is_not_an_error_but_other_failures_are() {
        assert!(emit(&mut Gone, "stats\n").is_ok());
        let mut full = [0u8; 2];
        let err = emit(&mut &mut full[..], "too long").expect_err("no room");
        assert!(format!("{err:#}").contains("writing the output"), "{err:#}");
        let mut out = Vec::new();
        emit(&mut out, "a\n").expect("written");
        assert_eq!(out, b"a\n");
    }
}
