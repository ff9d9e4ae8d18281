//! Operator commands: `replay`, `purge`, `stats` against `DATABASE_URL`, and `check-config`.
//! Thin on purpose: they check their arguments, connect, call `dispatch_store::queries::ops`
//! (the only place with SQL) and print. Every flag is checked while parsing, so a mistake is
//! reported before anything touches the database.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{ArgGroup, Args};
use dispatch_domain::{EventId, SubscriptionId};
use dispatch_store::queries::ops::{self, PurgeReport, Purged, ReplaySelector, Stats};
use dispatch_store::{AsyncPgConnection, StoreError, admin, migrations, notify};

use crate::pg::DEFAULT_DATABASE_URL;

/// The window of the failure counts `stats` shows.
const STATS_WINDOW: Duration = Duration::from_secs(3600);
/// The longest `--older-than` accepted (100 years): enough for any retention, far from overflow.
const MAX_AGE_DAYS: u64 = 36_500;

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("selector")
        .required(true)
        .multiple(false)
        .args(["event", "subscription", "since"])
))]
pub struct ReplayArgs {
    /// Replay the failed deliveries of this event.
    #[arg(long, value_name = "EVENT_ID", value_parser = parse_event_id)]
    event: Option<String>,
    /// Replay the failed deliveries to this subscription.
    #[arg(long, value_name = "SUBSCRIPTION_ID", value_parser = parse_subscription_id)]
    subscription: Option<String>,
    /// Replay deliveries that failed at or after this time (RFC 3339, e.g. 2026-12-01T08:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    since: Option<DateTime<Utc>>,
    /// With --since: only those that failed before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", requires = "since",
          conflicts_with_all = ["event", "subscription"], value_parser = parse_rfc3339)]
    until: Option<DateTime<Utc>>,
    /// Print how many deliveries would be replayed and change nothing.
    #[arg(long)]
    dry_run: bool,
}

impl ReplayArgs {
    /// The selector the flags name (clap has already made sure exactly one was given).
    fn selector(&self) -> Result<ReplaySelector, String> {
        if self.until.is_some() && self.since.is_none() {
            return Err("--until needs --since".to_owned());
        }
        match (&self.event, &self.subscription, self.since) {
            (Some(id), None, None) => Ok(ReplaySelector::Event(id.clone())),
            (None, Some(id), None) => Ok(ReplaySelector::Subscription(id.clone())),
            (None, None, Some(since)) => {
                if let Some(until) = self.until
                    && until <= since
                {
                    return Err(format!(
                        "--until ({}) must be later than --since ({})",
                        timestamp(until),
                        timestamp(since)
                    ));
                }
                Ok(ReplaySelector::FailedBetween {
                    since,
                    until: self.until,
                })
            }
            _ => Err("give exactly one of --event, --subscription or --since".to_owned()),
        }
    }
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Delete finished history older than this: a whole number and a unit, s, m, h or d
    /// (e.g. 30d, 12h, 90m).
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    older_than: Duration,
    /// Events deleted per batch (each batch is its own short transaction).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    batch_size: i64,
    /// Print what would be deleted and change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Check only the API's configuration.
    #[arg(long, conflicts_with = "worker")]
    api: bool,
    /// Check only the worker's configuration.
    #[arg(long)]
    worker: bool,
    /// TOML configuration file, as the binaries' --config (overridden by the environment).
    #[arg(long, value_name = "FILE", env = "DISPATCH_CONFIG")]
    config: Option<PathBuf>,
}

fn parse_event_id(value: &str) -> Result<String, String> {
    EventId::parse(value)
        .map(|id| id.into_inner())
        .map_err(|e| format!("not an event id: {e}"))
}

fn parse_subscription_id(value: &str) -> Result<String, String> {
    SubscriptionId::parse(value)
        .map(|id| id.into_inner())
        .map_err(|e| format!("not a subscription id: {e}"))
}

/// An RFC 3339 timestamp with its offset (`2026-12-01T08:00:00Z`, `…+02:00`).
fn parse_rfc3339(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "expected an RFC 3339 time with a date, a time and an offset, such as \
                 2026-12-01T08:00:00Z or 2026-12-01T10:00:00+02:00 ({e})"
            )
        })
}

/// A positive whole number with a unit: `90s`, `90m`, `12h`, `30d`.
fn parse_age(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let digits = value.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = value.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "expected a whole number and a unit (s, m, h or d), such as 30d, 12h or 90m; \
             got {value:?}"
        ));
    }
    let seconds_per_unit: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => {
            return Err(format!(
                "{value:?} has no unit: add s, m, h or d (e.g. {value}d)"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit {other:?} in {value:?}: use s, m, h or d (e.g. 30d)"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is too large"))?;
    let seconds = n
        .checked_mul(seconds_per_unit)
        .filter(|s| *s <= MAX_AGE_DAYS * 86_400)
        .ok_or_else(|| format!("{value:?} is too large: at most {MAX_AGE_DAYS}d"))?;
    if seconds == 0 {
        return Err(format!("{value:?} must be longer than zero"));
    }
    Ok(Duration::from_secs(seconds))
}

// ---------------------------------------------------------------------------------------------
// Database access
// ---------------------------------------------------------------------------------------------

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
}

/// Connects to `DATABASE_URL` (or the default) and makes sure its schema is complete.
async fn connect() -> Result<AsyncPgConnection> {
    let url = database_url();
    dispatch_config::check_database_url(&url)
        .map_err(|e| anyhow::anyhow!("DATABASE_URL {}: {e}", redact_url(&url)))?;
    let mut conn = admin::connect(&url)
        .await
        .with_context(|| format!("connecting to {}", redact_url(&url)))?;
    let complete = match migrations::is_up_to_date(&mut conn).await {
        Ok(complete) => complete,
        Err(StoreError::Corrupt {
            what: "migration table",
            ..
        }) => bail!(
            "{} has no Dispatch schema: run `cargo xtask migrate up` first",
            redact_url(&url)
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the migrations of {}", redact_url(&url)));
        }
    };
    if !complete {
        bail!(
            "{} is missing migrations: run `cargo xtask migrate up` first",
            redact_url(&url)
        );
    }
    Ok(conn)
}

/// The URL without its password (in the user info or a `password=` parameter).
fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
                    None => base.to_owned(),
                },
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    match query {
        None => base,
        Some(q) => {
            let params: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn describe(selector: &ReplaySelector) -> String {
    match selector {
        ReplaySelector::Event(id) => format!("of event {id}"),
        ReplaySelector::Subscription(id) => format!("to subscription {id}"),
        ReplaySelector::FailedBetween { since, until } => match until {
            Some(until) => format!(
                "that failed from {} to {}",
                timestamp(*since),
                timestamp(*until)
            ),
            None => format!("that failed since {}", timestamp(*since)),
        },
    }
}

fn failed_deliveries(n: i64) -> String {
    match n {
        1 => "1 failed delivery".to_owned(),
        n => format!("{n} failed deliveries"),
    }
}

pub async fn replay(args: ReplayArgs) -> Result<bool> {
    let selector = args.selector().map_err(anyhow::Error::msg)?;
    let mut conn = connect().await?;
    let what = describe(&selector);
    if args.dry_run {
        let n = ops::count_replayable(&mut conn, &selector).await?;
        println!("dry run: would replay {} {what}", failed_deliveries(n));
        return Ok(true);
    }
    let n = ops::replay(&mut conn, &selector).await?;
    if n > 0 {
        // Wake the workers now rather than at their next poll.
        notify::notify(&mut conn).await?;
    }
    println!(
        "replayed {} {what}: pending again, with a full retry schedule",
        failed_deliveries(n as i64)
    );
    Ok(true)
}

fn purged_text(p: &Purged) -> String {
    format!(
        "{} events, {} deliveries, {} attempts, {} deleted subscriptions",
        p.events, p.deliveries, p.attempts, p.subscriptions
    )
}

pub async fn purge(args: PurgeArgs) -> Result<bool> {
    let age = chrono::Duration::from_std(args.older_than).context("--older-than")?;
    let cutoff = Utc::now()
        .checked_sub_signed(age)
        .context("--older-than reaches before the calendar")?;
    let mut conn = connect().await?;
    if args.dry_run {
        let would = ops::count_purgeable(&mut conn, cutoff).await?;
        println!(
            "dry run: would delete {} (finished before {})",
            purged_text(&would),
            timestamp(cutoff)
        );
        return Ok(true);
    }
    eprintln!(
        "xtask: deleting finished history received before {} in batches of {}",
        timestamp(cutoff),
        args.batch_size
    );
    let mut last_progress = Instant::now();
    let report: PurgeReport = ops::purge(&mut conn, cutoff, args.batch_size, |so_far| {
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!("xtask: so far {}", purged_text(&so_far.purged));
        }
    })
    .await?;
    println!(
        "deleted {} in {} batches",
        purged_text(&report.purged),
        report.event_batches + report.subscription_batches
    );
    Ok(true)
}

pub async fn stats(args: StatsArgs) -> Result<bool> {
    let mut conn = connect().await?;
    let stats = ops::stats(&mut conn, STATS_WINDOW).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats_json(&stats))?);
    } else {
        print!("{}", stats_text(&stats));
    }
    Ok(true)
}

/// A short human age: `0s`, `42s`, `3m 20s`, `2h 5m`, `3d 4h`.
fn age_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn window_text(window: Duration) -> String {
    match window.as_secs() {
        3600 => "last hour".to_owned(),
        s => format!("last {}", age_text(s as f64)),
    }
}

/// Lays out rows under headers, columns padded to their widest cell; `numeric` columns are
/// right-aligned.
fn table(headers: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(numeric)
            .map(|((cell, w), right)| {
                if *right {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn rate_text(stats: &Stats) -> String {
    match stats.failure_rate() {
        Some(rate) => format!("{:.1} %", rate * 100.0),
        None => "n/a (no attempts)".to_owned(),
    }
}

fn stats_text(stats: &Stats) -> String {
    let window = window_text(stats.window);
    let mut out = String::new();
    out.push_str(&format!(
        "Backlog: {} due, oldest waiting {}\n",
        stats.backlog.due,
        age_text(stats.backlog.oldest_due_age_secs)
    ));
    out.push_str(&format!(
        "Attempts ({window}): {}, failed {}, failure rate {}\n",
        stats.attempts,
        stats.failed_attempts,
        rate_text(stats)
    ));
    out.push_str(&format!(
        "Hot queue: {} live rows, {} dead, autovacuum {}\n",
        stats.queue.live_rows,
        stats.queue.dead_rows,
        if stats.queue.autovacuum { "on" } else { "off" }
    ));
    for warning in stats.queue.warnings() {
        out.push_str(&format!("WARNING: {warning}\n"));
    }
    out.push('\n');
    let statuses: Vec<Vec<String>> = stats
        .by_status
        .iter()
        .map(|(status, n)| vec![status.as_str().to_owned(), n.to_string()])
        .collect();
    out.push_str(&table(&["STATUS", "DELIVERIES"], &[false, true], &statuses));
    out.push('\n');
    if stats.subscriptions.is_empty() {
        out.push_str("No subscriptions.\n");
        return out;
    }
    let attempts_header = format!("ATTEMPTS ({window})");
    let failures_header = format!("FAILURES ({window})");
    let rows: Vec<Vec<String>> = stats
        .subscriptions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.circuit_state.clone(),
                s.circuit_open_until.map(timestamp).unwrap_or_default(),
                s.due.to_string(),
                s.attempts.to_string(),
                s.failures.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SUBSCRIPTION",
            "CIRCUIT",
            "OPEN UNTIL",
            "DUE",
            &attempts_header,
            &failures_header,
        ],
        &[false, false, false, true, true, true],
        &rows,
    ));
    out
}

fn stats_json(stats: &Stats) -> serde_json::Value {
    let by_status: serde_json::Map<String, serde_json::Value> = stats
        .by_status
        .iter()
        .map(|(status, n)| (status.as_str().to_owned(), (*n).into()))
        .collect();
    let subscriptions: Vec<serde_json::Value> = stats
        .subscriptions
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "circuit_state": s.circuit_state,
                "circuit_open_until": s.circuit_open_until.map(timestamp),
                "due": s.due,
                "attempts": s.attempts,
                "failures": s.failures,
            })
        })
        .collect();
    serde_json::json!({
        "backlog": {
            "due": stats.backlog.due,
            "oldest_due_age_secs": stats.backlog.oldest_due_age_secs,
        },
        "deliveries_by_status": by_status,
        "queue": {
            "live_rows": stats.queue.live_rows,
            "dead_rows": stats.queue.dead_rows,
            "autovacuum": stats.queue.autovacuum,
            "warnings": stats.queue.warnings(),
        },
        "window_secs": stats.window.as_secs(),
        "attempts": stats.attempts,
        "failed_attempts": stats.failed_attempts,
        "failure_rate": stats.failure_rate(),
        "subscriptions": subscriptions,
    })
}

// ---------------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------------

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// `Json` → `json`: the log format as the configuration spells it.
fn lowercase_debug(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").to_ascii_lowercase()
}

/// The API's effective values, keyed as in its configuration table; nothing secret (the
/// database password is masked).
fn api_values(s: &dispatch_api::Settings) -> Vec<(&'static str, String)> {
    vec![
        ("addr", s.addr.to_string()),
        ("database_url", redact_url(&s.database.url)),
        ("db_max_connections", s.database.max_connections.to_string()),
        ("db_connect_timeout_ms", millis(s.database.connect_timeout)),
        ("max_body_bytes", s.max_body_bytes.to_string()),
        ("max_batch_body_bytes", s.max_batch_body_bytes.to_string()),
        ("http_workers", s.http_workers.to_string()),
        (
            "shutdown_timeout_secs",
            s.shutdown_timeout.as_secs().to_string(),
        ),
        ("notify_interval_ms", millis(s.notify_interval)),
        (
            "ingest_group_max_events",
            s.ingest_groups.max_events.to_string(),
        ),
        ("ingest_committers", s.ingest_groups.committers.to_string()),
        ("log_format", lowercase_debug(&s.log_format)),
        (
            "auth",
            match &s.auth {
                dispatch_api::auth::Auth::Disabled => "DISABLED (anyone may call)".to_owned(),
                dispatch_api::auth::Auth::Keys(keys) => format!("{} API key(s)", keys.len()),
            },
        ),
        ("secret_keys", key_ids(&s.secret_keys)),
        (
            "secret_rotation_overlap_secs",
            s.secret_rotation_overlap.as_secs().to_string(),
        ),
    ]
}

/// The ids of the secret keys, never the keys: `k2 (seals), k1`.
fn key_ids(keys: &dispatch_domain::sealing::Keyring) -> String {
    keys.ids()
        .enumerate()
        .map(|(i, id)| {
            if i == 0 {
                format!("{id} (seals)")
            } else {
                id.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The worker's effective values, keyed as in its configuration table.
fn worker_values(s: &dispatch_worker::Settings) -> Vec<(&'static str, String)> {
    let breaker = &s.resilience.breaker;
    let statuses: Vec<String> = s
        .retry
        .permanent_statuses
        .iter()
        .map(ToString::to_string)
        .collect();
    vec![
        ("addr", s.addr.to_string()),
        ("database_url", redact_url(&s.database.url)),
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
        ("secret_keys", key_ids(&s.secret_keys)),
        ("log_format", lowercase_debug(&s.log_format)),
    ]
}

fn values_text(values: &[(&str, String)]) -> String {
    let width = values.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    values
        .iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}\n"))
        .collect()
}

/// The report for one binary: `OK` and its values, or every problem.
fn config_report<S>(
    binary: &str,
    loaded: Result<S, dispatch_config::ConfigError>,
    values: impl Fn(&S) -> Vec<(&'static str, String)>,
) -> (bool, String) {
    match loaded {
        Ok(settings) => (
            true,
            format!("{binary}: OK\n{}", values_text(&values(&settings))),
        ),
        Err(e) => (false, format!("{binary}: {e}")),
    }
}

pub fn check_config(args: CheckConfigArgs) -> Result<bool> {
    let file = args.config.as_deref();
    let both = !args.api && !args.worker;
    let mut reports = Vec::new();
    if args.api || both {
        reports.push(config_report(
            "dispatch-api",
            dispatch_api::Settings::load(file),
            api_values,
        ));
    }
    if args.worker || both {
        reports.push(config_report(
            "dispatch-worker",
            dispatch_worker::Settings::load(file),
            worker_values,
        ));
    }
    let mut ok = true;
    for (i, (fine, text)) in reports.iter().enumerate() {
        if i > 0 {
            println!();
        }
        if *fine {
            print!("{text}");
        } else {
            eprint!("{text}");
        }
        ok &= fine;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use clap::Parser;
    use clap::error::ErrorKind;
    use dispatch_domain::DeliveryStatus;
    use dispatch_store::queries::deliveries::Backlog;
    use dispatch_store::queries::health::QueueHealth;
    use dispatch_store::queries::ops::SubscriptionStats;

    use super::*;
    use crate::{Cli, Task};

    fn parse(args: &[&str]) -> Result<Task, clap::Error> {
        let mut argv = vec!["cargo xtask"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| cli.command)
    }

    fn replay_args(args: &[&str]) -> ReplayArgs {
        let mut argv = vec!["replay"];
        argv.extend_from_slice(args);
        match parse(&argv) {
            Ok(Task::Replay(args)) => args,
            Ok(_) => panic!("not a replay"),
            Err(e) => panic!("{e}"),
        }
    }

    fn error(args: &[&str]) -> clap::Error {
        match parse(args) {
            Ok(_) => panic!("{args:?} should be refused"),
            Err(e) => e,
        }
    }

    // Durations

    #[test]
    fn ages_take_a_whole_number_and_a_unit() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age(" 7d "), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(
            parse_age("36500d"),
            Ok(Duration::from_secs(36_500 * 86_400))
        );
    }

    #[test]
    fn bad_ages_are_refused_with_a_reason() {
        let refused = |value: &str, needle: &str| {
            let err = parse_age(value).expect_err(value);
            assert!(err.contains(needle), "{value:?}: {err}");
        };
        refused("30", "has no unit");
        refused("30y", "unknown unit \"y\"");
        refused("30 d", "unknown unit \" d\"");
        refused("30D", "unknown unit \"D\"");
        refused("1h30m", "unknown unit \"h30m\"");
        refused("d", "expected a whole number and a unit");
        refused("", "expected a whole number and a unit");
        refused("-5d", "expected a whole number and a unit");
        refused("1.5h", "unknown unit \".5h\"");
        refused("0d", "longer than zero");
        refused("0s", "longer than zero");
        refused("36501d", "at most 36500d");
        refused("99999999999999999999999d", "too large");
        refused("999999999999999999h", "too large");
    }

    #[test]
    fn purge_flags_are_checked() {
        match parse(&["purge", "--older-than", "30d"]).unwrap() {
            Task::Purge(args) => {
                assert_eq!(args.older_than, Duration::from_secs(30 * 86_400));
                assert_eq!(args.batch_size, 1000, "the default batch");
                assert!(!args.dry_run);
            }
            _ => panic!("not a purge"),
        }
        match parse(&[
            "purge",
            "--older-than",
            "12h",
            "--batch-size",
            "2",
            "--dry-run",
        ])
        .unwrap()
        {
            Task::Purge(args) => {
                assert_eq!(args.batch_size, 2);
                assert!(args.dry_run);
            }
            _ => panic!("not a purge"),
        }
        assert_eq!(
            error(&["purge"]).kind(),
            ErrorKind::MissingRequiredArgument,
            "no default retention: the operator names it"
        );
        let e = error(&["purge", "--older-than", "30"]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
        assert!(e.to_string().contains("has no unit"), "{e}");
        for bad in ["0", "-1", "100001", "many"] {
            let e = error(&["purge", "--older-than", "30d", "--batch-size", bad]);
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ValueValidation | ErrorKind::UnknownArgument
                ),
                "{bad}: {e}"
            );
        }
    }

    // Replay selectors

    #[test]
    fn replay_takes_exactly_one_selector() {
        assert_eq!(
            replay_args(&["--event", "evt_1"]).selector(),
            Ok(ReplaySelector::Event("evt_1".to_owned()))
        );
        let args = replay_args(&["--subscription", "sub_1", "--dry-run"]);
        assert!(args.dry_run);
        assert_eq!(
            args.selector(),
            Ok(ReplaySelector::Subscription("sub_1".to_owned()))
        );
        assert_eq!(
            replay_args(&["--since", "2026-12-01T08:00:00+02:00"]).selector(),
            Ok(ReplaySelector::FailedBetween {
                since: "2026-12-01T06:00:00Z".parse().unwrap(),
                until: None
            })
        );
        assert_eq!(
            replay_args(&[
                "--since",
                "2026-12-01T06:00:00Z",
                "--until",
                "2026-12-02T06:00:00Z"
            ])
            .selector(),
            Ok(ReplaySelector::FailedBetween {
                since: "2026-12-01T06:00:00Z".parse().unwrap(),
                until: Some("2026-12-02T06:00:00Z".parse().unwrap())
            })
        );

        assert_eq!(
            error(&["replay"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            error(&["replay", "--dry-run"]).kind(),
            ErrorKind::MissingRequiredArgument
        );
        for pair in [
            ["--event", "e", "--subscription", "s"],
            ["--event", "e", "--since", "2026-12-01T00:00:00Z"],
            ["--subscription", "s", "--since", "2026-12-01T00:00:00Z"],
        ] {
            let mut argv = vec!["replay"];
            argv.extend_from_slice(&pair);
            let e = error(&argv);
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{pair:?}: {e}");
            assert!(e.to_string().contains("cannot be used with"), "{e}");
        }
        let e = error(&["replay", "--event", "e", "--until", "2026-12-01T00:00:00Z"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{e}");
        let e = error(&["replay", "--until", "2026-12-01T00:00:00Z"]);
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{e}");
        assert!(e.to_string().contains("--since"), "{e}");
    }

    #[test]
    fn replay_times_must_be_rfc3339_and_in_order() {
        for bad in [
            "yesterday",
            "2026-12-01",
            "2026-12-01 08:00:00",
            "2026-12-01T08:00:00",
            "2026-13-01T08:00:00Z",
            "1733040000",
        ] {
            let e = error(&["replay", "--since", bad]);
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
            assert!(e.to_string().contains("RFC 3339"), "{bad}: {e}");
        }
        let e = error(&[
            "replay",
            "--since",
            "2026-12-01T00:00:00Z",
            "--until",
            "tomorrow",
        ]);
        assert!(e.to_string().contains("RFC 3339"), "{e}");

        for until in ["2026-12-01T00:00:00Z", "2026-11-30T00:00:00Z"] {
            let err = replay_args(&["--since", "2026-12-01T00:00:00Z", "--until", until])
                .selector()
                .expect_err(until);
            assert!(err.contains("must be later than --since"), "{err}");
        }
    }

    #[test]
    fn replay_ids_are_checked_like_the_api_checks_them() {
        let e = error(&["replay", "--event", ""]);
        assert_eq!(e.kind(), ErrorKind::ValueValidation, "{e}");
        assert!(e.to_string().contains("not an event id"), "{e}");
        let long = "x".repeat(10_000);
        let e = error(&["replay", "--subscription", &long]);
        assert!(e.to_string().contains("not a subscription id"), "{e}");
    }

    // check-config

    #[test]
    fn check_config_takes_one_binary_or_both() {
        for (argv, api, worker) in [
            (vec!["check-config"], false, false),
            (vec!["check-config", "--api"], true, false),
            (vec!["check-config", "--worker"], false, true),
        ] {
            match parse(&argv).unwrap() {
                Task::CheckConfig(args) => assert_eq!((args.api, args.worker), (api, worker)),
                _ => panic!("not check-config"),
            }
        }
        let e = error(&["check-config", "--api", "--worker"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_valid_configuration_is_reported_with_its_values_and_no_password() {
        let vars = env(&[
            ("DATABASE_URL", "postgres://app:s3cret@db:5432/dispatch"),
            ("DISPATCH_WORKER_ID", "worker-7"),
            ("DISPATCH_API_KEYS", "an-api-key-not-to-print"),
            (
                "DISPATCH_SECRET_KEYS",
                "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,\
                 k1:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=",
            ),
        ]);
        let (ok, text) = config_report(
            "dispatch-api",
            dispatch_api::Settings::load_from(None, &vars),
            api_values,
        );
        assert!(ok, "{text}");
        assert!(text.starts_with("dispatch-api: OK\n"), "{text}");
        assert!(text.contains("  addr "), "{text}");
        assert!(text.contains("0.0.0.0:8080"), "{text}");
        assert!(
            text.contains("postgres://app:***@db:5432/dispatch"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("max_body_bytes ")
                    && l.trim_end().ends_with(" 262144")),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("1 API key(s)"), "{text}");
        assert!(!text.contains("an-api-key-not-to-print"), "{text}");
        assert!(text.contains("k2 (seals), k1"), "{text}");
        assert!(!text.contains("AQIDBAUG"), "{text}");

        let (ok, text) = config_report(
            "dispatch-worker",
            dispatch_worker::Settings::load_from(None, &vars),
            worker_values,
        );
        assert!(ok, "{text}");
        for line in [
            "worker-7",
            "0.0.0.0:8081",
            "lease_margin_ms                30000",
            "retry_jitter_percent           10",
            "permanent_statuses             410",
            "breaker_failure_percent        50",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn an_invalid_configuration_lists_every_problem() {
        let vars = env(&[
            ("ADDR", "nonsense"),
            ("DISPATCH_MAX_BODY_BYTES", "12"),
            ("DISPATCH_RETRY_MAX_ATTEMPTS", "0"),
        ]);
        let (ok, text) = config_report(
            "dispatch-api",
            dispatch_api::Settings::load_from(None, &vars),
            api_values,
        );
        assert!(!ok);
        assert!(
            text.starts_with("dispatch-api: invalid configuration:"),
            "{text}"
        );
        assert!(text.contains("addr (ADDR / DISPATCH_ADDR)"), "{text}");
        assert!(
            text.contains("max_body_bytes (DISPATCH_MAX_BODY_BYTES)"),
            "{text}"
        );
        let (ok, text) = config_report(
            "dispatch-worker",
            dispatch_worker::Settings::load_from(None, &vars),
            worker_values,
        );
        assert!(!ok);
        assert!(text.contains("addr (ADDR / DISPATCH_ADDR)"), "{text}");
        assert!(text.contains("retry_max_attempts"), "{text}");
    }

    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            redact_url("postgres://postgres:postgres@localhost:5432/dispatch?sslmode=disable"),
            "postgres://postgres:***@localhost:5432/dispatch?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://u:p@ss:w@rd@h/db"),
            "postgresql://u:***@h/db",
            "the host follows the last @"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=p&sslmode=prefer"),
            "postgres://h/db?user=u&password=***&sslmode=prefer"
        );
    }

    // stats output

    fn sample() -> Stats {
        Stats {
            backlog: Backlog {
                due: 3,
                oldest_due_age_secs: 200.4,
            },
            by_status: DeliveryStatus::ALL
                .iter()
                .zip([2, 1, 2, 1234, 1, 0])
                .map(|(s, n)| (*s, n))
                .collect(),
            window: STATS_WINDOW,
            attempts: 5,
            failed_attempts: 3,
            queue: QueueHealth {
                live_rows: 5,
                dead_rows: 120_000,
                autovacuum: false,
                last_vacuum_age_secs: None,
                can_vacuum: true,
            },
            subscriptions: vec![
                SubscriptionStats {
                    id: "sub_payments".to_owned(),
                    circuit_state: "open".to_owned(),
                    circuit_open_until: Some("2026-12-01T08:00:30Z".parse().unwrap()),
                    due: 2,
                    attempts: 4,
                    failures: 3,
                },
                SubscriptionStats {
                    id: "s_b".to_owned(),
                    circuit_state: "closed".to_owned(),
                    circuit_open_until: None,
                    due: 1,
                    attempts: 1,
                    failures: 0,
                },
            ],
        }
    }

    #[test]
    fn stats_print_as_aligned_tables() {
        let text = stats_text(&sample());
        let expected = "\
Backlog: 3 due, oldest waiting 3m 20s
Attempts (last hour): 5, failed 3, failure rate 60.0 %
Hot queue: 5 live rows, 120000 dead, autovacuum off
WARNING: autovacuum is off for the hot queue (server setting or table option): claims slow down as dead rows pile up unless the workers vacuum it (queue_vacuum_secs > 0 and a role that owns delivery_queue)
WARNING: the hot queue is bloated: 120000 dead rows for 5 live; vacuum is falling behind

STATUS      DELIVERIES
pending              2
processing           1
retrying             2
delivered         1234
failed               1
cancelled            0

SUBSCRIPTION  CIRCUIT  OPEN UNTIL            DUE  ATTEMPTS (last hour)  FAILURES (last hour)
sub_payments  open     2026-12-01T08:00:30Z    2                     4                     3
s_b           closed                           1                     1                     0
";
        assert_eq!(text, expected, "\n{text}");

        let empty = Stats {
            attempts: 0,
            failed_attempts: 0,
            subscriptions: Vec::new(),
            ..sample()
        };
        let text = stats_text(&empty);
        assert!(text.contains("failure rate n/a (no attempts)"), "{text}");
        assert!(text.ends_with("No subscriptions.\n"), "{text}");
    }

    #[test]
    fn stats_print_as_json() {
        let json = stats_json(&sample());
        assert_eq!(
            json,
            serde_json::json!({
                "backlog": {"due": 3, "oldest_due_age_secs": 200.4},
                "deliveries_by_status": {
                    "pending": 2, "processing": 1, "retrying": 2,
                    "delivered": 1234, "failed": 1, "cancelled": 0
                },
                "window_secs": 3600,
                "attempts": 5,
                "failed_attempts": 3,
                "failure_rate": 0.6,
                "queue": {
                    "live_rows": 5, "dead_rows": 120000, "autovacuum": false,
                    "warnings": sample().queue.warnings(),
                },
                "subscriptions": [
                    {"id": "sub_payments", "circuit_state": "open",
                     "circuit_open_until": "2026-12-01T08:00:30Z",
                     "due": 2, "attempts": 4, "failures": 3},
                    {"id": "s_b", "circuit_state": "closed", "circuit_open_until": null,
                     "due": 1, "attempts": 1, "failures": 0}
                ]
            })
        );
        let none = Stats {
            attempts: 0,
            failed_attempts: 0,
            ..sample()
        };
        assert_eq!(stats_json(&none)["failure_rate"], serde_json::Value::Null);
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age_text(0.0), "0s");
        assert_eq!(age_text(-3.0), "0s");
        assert_eq!(age_text(42.4), "42s");
        assert_eq!(age_text(200.0), "3m 20s");
        assert_eq!(age_text(7500.0), "2h 5m");
        assert_eq!(age_text(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 4h");
    }
}
