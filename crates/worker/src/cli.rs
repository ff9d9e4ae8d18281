//! The `dispatch-worker` command line: run the delivery loop (the default), or `check-config`
//! to load the configuration as the loop would and print the effective values or every problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use dispatch_config::ConfigError;
use dispatch_config::report::{key_ids, lowercase_debug, millis};

use crate::{Settings, Worker, health};

#[derive(Debug, Parser)]
#[command(
    name = "dispatch-worker",
    version,
    about = "Dispatch's delivery worker"
)]
pub struct Cli {
    /// Optional TOML configuration file (overridden by the environment).
    #[arg(long, env = "DISPATCH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Claim and deliver until SIGTERM or SIGINT, then drain (the default).
    Run,
    /// Load and validate the worker's configuration as `run` does, and print the effective
    /// values (secrets masked) or every problem; exits 1 when invalid.
    CheckConfig,
}

/// Runs the command; `Ok(false)` when `check-config` found problems (already printed).
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            let (ok, text) = check_config(cli.config.as_deref(), &std::env::vars().collect());
            if ok {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            Ok(ok)
        }
        Command::Run => serve(cli.config.as_deref()).await.map(|()| true),
    }
}

async fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = Settings::load(config)?;
    // Held until the worker drained: dropping it flushes the spans still buffered.
    let _telemetry = dispatch_telemetry::init("dispatch-worker", settings.log_format);
    let worker = Worker::new(&settings).context("building the HTTP client")?;
    let (bound, server) = health::serve(settings.addr, worker.clone())
        .await
        .with_context(|| format!("binding {}", settings.addr))?;
    tokio::spawn(server);
    tracing::info!(addr = %bound, worker.id = worker.id(), "dispatch-worker started");
    worker.run(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}

/// Loads the worker's configuration from `file` and `env` and reports on it: `(valid, text)`.
pub fn check_config(file: Option<&Path>, env: &HashMap<String, String>) -> (bool, String) {
    report(Settings::load_from(file, env))
}

/// The report for already loaded settings.
pub fn report(loaded: Result<Settings, ConfigError>) -> (bool, String) {
    dispatch_config::report::report("dispatch-worker", loaded, values)
}

/// The worker's effective values, keyed as in its configuration table; nothing secret.
pub fn values(s: &Settings) -> Vec<(&'static str, String)> {
    let breaker = &s.resilience.breaker;
    let statuses: Vec<String> = s
        .retry
        .permanent_statuses
        .iter()
        .map(ToString::to_string)
        .collect();
    vec![
        ("addr", s.addr.to_string()),
        ("database_url", s.database.url.to_string()),
        ("db_max_connections", s.database.max_connections.to_string()),
        ("db_connect_timeout_ms", millis(s.database.connect_timeout)),
        (
            "synchronous_commit",
            match s.synchronous_commit {
                dispatch_store::pool::Durability::Durable => "on",
                dispatch_store::pool::Durability::Relaxed => "off",
            }
            .to_owned(),
        ),
        ("worker_id", s.worker_id.clone()),
        ("max_in_flight", s.max_in_flight.to_string()),
        ("poll_interval_ms", millis(s.poll_interval)),
        ("request_timeout_ms", millis(s.request_timeout)),
        ("connect_timeout_ms", millis(s.connect_timeout)),
        (
            "lease_margin_ms",
            millis(s.lease.saturating_sub(s.request_timeout)),
        ),
        ("max_response_bytes", s.max_response_bytes.to_string()),
        ("stored_response_bytes", s.stored_response_bytes.to_string()),
        ("retry_initial_delay_ms", millis(s.retry.initial_delay)),
        (
            "retry_max_delay_secs",
            s.retry.max_delay.as_secs().to_string(),
        ),
        ("retry_max_attempts", s.retry.max_attempts.to_string()),
        (
            "retry_jitter_percent",
            format!("{:.0}", s.retry.jitter * 100.0),
        ),
        ("permanent_statuses", statuses.join(",")),
        (
            "breaker_failure_percent",
            format!("{:.0}", breaker.failure_ratio * 100.0),
        ),
        ("breaker_min_requests", breaker.min_requests.to_string()),
        ("breaker_window_secs", breaker.window.as_secs().to_string()),
        ("breaker_open_secs", breaker.open_for.as_secs().to_string()),
        (
            "breaker_half_open_trials",
            breaker.half_open_trials.to_string(),
        ),
        (
            "max_in_flight_per_destination",
            s.resilience.max_in_flight_per_destination.to_string(),
        ),
        (
            "destination_idle_secs",
            s.resilience.idle_after.as_secs().to_string(),
        ),
        (
            "shutdown_grace_secs",
            s.shutdown_grace.as_secs().to_string(),
        ),
        (
            "queue_vacuum_secs",
            s.queue_vacuum_every
                .map_or(0, |every| every.as_secs())
                .to_string(),
        ),
        (
            "auto_disable_after_secs",
            s.auto_disable_after.map_or(0, |d| d.as_secs()).to_string(),
        ),
        ("secret_keys", key_ids(s.secret_keys.ids())),
        ("log_format", lowercase_debug(&s.log_format)),
    ]
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_worker_runs_by_default_or_checks_its_configuration() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.command);
        assert_eq!(parse(&["dispatch-worker"]).ok(), Some(None));
        assert_eq!(
            parse(&["dispatch-worker", "run"]).ok(),
            Some(Some(Command::Run))
        );
        let cli = Cli::try_parse_from(["dispatch-worker", "check-config", "--config", "w.toml"])
            .expect("parses");
        assert_eq!(cli.command, Some(Command::CheckConfig));
        assert_eq!(cli.config, Some(PathBuf::from("w.toml")));
        assert!(parse(&["dispatch-worker", "replay"]).is_err());
    }

    #[test]
    fn a_valid_configuration_is_reported_with_its_values_and_no_secret() {
        let vars = env(&[
            ("DATABASE_URL", "postgres://app:s3cret@db:5432/dispatch"),
            ("DISPATCH_WORKER_ID", "worker-7"),
            (
                "DISPATCH_SECRET_KEYS",
                "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,\
                 k1:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=",
            ),
        ]);
        let (ok, text) = check_config(None, &vars);
        assert!(ok, "{text}");
        assert!(text.starts_with("dispatch-worker: OK\n"), "{text}");
        for line in [
            "worker-7",
            "0.0.0.0:8081",
            "postgres://app:***@db:5432/dispatch",
            "lease_margin_ms                30000",
            "retry_jitter_percent           10",
            "permanent_statuses             410",
            "breaker_failure_percent        50",
            "k2 (seals), k1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("AQIDBAUG"), "{text}");
    }

    #[test]
    fn an_invalid_configuration_lists_every_problem() {
        let vars = env(&[("ADDR", "nonsense"), ("DISPATCH_RETRY_MAX_ATTEMPTS", "0")]);
        let (ok, text) = check_config(None, &vars);
        assert!(!ok);
        assert!(
            text.starts_with("dispatch-worker: invalid configuration:"),
            "{text}"
        );
        assert!(text.contains("addr (ADDR / DISPATCH_ADDR)"), "{text}");
        assert!(text.contains("retry_max_attempts"), "{text}");
    }
}
