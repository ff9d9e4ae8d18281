//! The worker's configuration: validation into [`Settings`] of the keys `keys.rs` lists with
//! their defaults. Layering is [`dispatch_config::layer`]'s (defaults → optional TOML file →
//! `DATABASE_URL`/`ADDR` → `DISPATCH_*`); every problem names its key.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dispatch_config::{Checker, layer};
pub use dispatch_config::{ConfigError, Key};
use dispatch_domain::breaker::BreakerSettings;
use dispatch_domain::destination::DestinationPolicy;
use dispatch_domain::retry::RetryPolicy;
use dispatch_domain::sealing::Keyring;
use dispatch_store::DatabaseSettings;
use dispatch_store::pool::Durability;
use dispatch_telemetry::LogFormat;
use serde::Deserialize;

use crate::resilience::ResilienceSettings;

mod keys;
#[cfg(test)]
mod tests;

pub use keys::{DEFAULT_DATABASE_URL, KEYS};

/// The worker's validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where `/healthz` and `/readyz` are served.
    pub addr: SocketAddr,
    pub database: DatabaseSettings,
    /// Whether the queue's bookkeeping (claims, outcomes, attempts) waits for the WAL flush.
    pub synchronous_commit: Durability,
    /// This worker's name on the leases it holds.
    pub worker_id: String,
    /// Most deliveries in flight at once.
    pub max_in_flight: usize,
    /// How often due retries are looked for when no wake-up arrives.
    pub poll_interval: Duration,
    /// Longest wait for a destination's answer (connect, headers and body).
    pub request_timeout: Duration,
    /// Longest wait for the TCP connection (the TLS handshake counts against the request
    /// timeout).
    pub connect_timeout: Duration,
    /// How long a claim holds a delivery; always longer than `request_timeout`.
    pub lease: Duration,
    /// Response bytes read from a destination; the rest is discarded.
    pub max_response_bytes: usize,
    /// Response bytes kept on the attempt.
    pub stored_response_bytes: usize,
    pub retry: RetryPolicy,
    /// Where webhooks may go: public addresses plus `allow_destinations`.
    pub destinations: DestinationPolicy,
    /// Opens the subscriptions' sealed secrets (every key that may still be in use).
    pub secret_keys: Keyring,
    /// Circuit breakers, per-destination in-flight caps, idle stack eviction.
    pub resilience: ResilienceSettings,
    /// How long in-flight deliveries may take to finish on SIGTERM.
    pub shutdown_grace: Duration,
    /// How often at most this worker vacuums the hot queue when dead rows pile up (`None`:
    /// never; autovacuum alone).
    pub queue_vacuum_every: Option<Duration>,
    /// How long a subscription's every attempt may fail before it is disabled, where it sets no
    /// threshold of its own (`None`: never).
    pub auto_disable_after: Option<Duration>,
    pub log_format: LogFormat,
}

#[derive(Debug, Deserialize)]
struct Raw {
    addr: String,
    database_url: String,
    db_max_connections: String,
    db_connect_timeout_ms: String,
    synchronous_commit: String,
    worker_id: String,
    max_in_flight: String,
    poll_interval_ms: String,
    request_timeout_ms: String,
    connect_timeout_ms: String,
    lease_margin_ms: String,
    max_response_bytes: String,
    stored_response_bytes: String,
    retry_initial_delay_ms: String,
    retry_max_delay_secs: String,
    retry_max_attempts: String,
    retry_jitter_percent: String,
    permanent_statuses: String,
    allow_destinations: String,
    secret_keys: String,
    breaker_failure_percent: String,
    breaker_min_requests: String,
    breaker_window_secs: String,
    breaker_open_secs: String,
    breaker_half_open_trials: String,
    max_in_flight_per_destination: String,
    destination_idle_secs: String,
    shutdown_grace_secs: String,
    queue_vacuum_secs: String,
    auto_disable_after_secs: String,
    development: String,
    log_format: String,
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{:x}", std::process::id(), nanos & 0xffff)
}

fn parse_statuses(text: &str) -> Result<BTreeSet<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u16>()
                .ok()
                .filter(|n| (300..600).contains(n))
                .ok_or_else(|| {
                    format!("expected comma-separated statuses from 300 to 599, got {s:?}")
                })
        })
        .collect()
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, &std::env::vars().collect())
    }

    pub fn load_from(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let raw: Raw = layer(KEYS, file, env)?;
        let mut c = Checker::new(KEYS);
        let addr = c.addr("addr", &raw.addr);
        let database = c.database(
            &raw.database_url,
            &raw.db_max_connections,
            &raw.db_connect_timeout_ms,
        );
        let synchronous_commit =
            c.parse::<Durability>("synchronous_commit", &raw.synchronous_commit);
        let worker_id = match raw.worker_id.trim() {
            "" => Some(default_worker_id()),
            id if id.len() <= 200 && !id.chars().any(char::is_control) => Some(id.to_owned()),
            _ => {
                c.problem("worker_id", "must be at most 200 printable characters");
                None
            }
        };
        let max_in_flight = c.number(
            "max_in_flight",
            &raw.max_in_flight,
            1usize,
            100_000,
            "deliveries",
        );
        let poll = c.millis("poll_interval_ms", &raw.poll_interval_ms, 10, 3_600_000);
        let timeout = c.millis(
            "request_timeout_ms",
            &raw.request_timeout_ms,
            *dispatch_domain::retry::TIMEOUT_MS_RANGE.start(),
            *dispatch_domain::retry::TIMEOUT_MS_RANGE.end(),
        );
        let connect = c.millis("connect_timeout_ms", &raw.connect_timeout_ms, 10, 600_000);
        let margin = c.millis("lease_margin_ms", &raw.lease_margin_ms, 1000, 3_600_000);
        let max_response = c.number(
            "max_response_bytes",
            &raw.max_response_bytes,
            0usize,
            16 << 20,
            "bytes",
        );
        let stored_response = c.number(
            "stored_response_bytes",
            &raw.stored_response_bytes,
            0usize,
            64 << 10,
            "bytes",
        );
        let initial = c.millis(
            "retry_initial_delay_ms",
            &raw.retry_initial_delay_ms,
            1,
            86_400_000,
        );
        let max_delay = c.number(
            "retry_max_delay_secs",
            &raw.retry_max_delay_secs,
            1u64,
            dispatch_domain::retry::MAX_DELAY_SECS_LIMIT,
            "seconds",
        );
        let max_attempts = c.number(
            "retry_max_attempts",
            &raw.retry_max_attempts,
            1u32,
            dispatch_domain::retry::MAX_ATTEMPTS_LIMIT,
            "attempts",
        );
        let jitter = c.number(
            "retry_jitter_percent",
            &raw.retry_jitter_percent,
            0u32,
            100,
            "percent",
        );
        let permanent = parse_statuses(&raw.permanent_statuses)
            .map_err(|e| c.problem("permanent_statuses", e))
            .ok();
        let failure_percent = c.number(
            "breaker_failure_percent",
            &raw.breaker_failure_percent,
            1u32,
            100,
            "percent",
        );
        let min_requests = c.number(
            "breaker_min_requests",
            &raw.breaker_min_requests,
            1u32,
            1_000_000,
            "requests",
        );
        let window = c.number(
            "breaker_window_secs",
            &raw.breaker_window_secs,
            1u64,
            86_400,
            "seconds",
        );
        let open_for = c.number(
            "breaker_open_secs",
            &raw.breaker_open_secs,
            1u64,
            86_400,
            "seconds",
        );
        let trials = c.number(
            "breaker_half_open_trials",
            &raw.breaker_half_open_trials,
            1u32,
            10_000,
            "requests",
        );
        let per_destination = c.number(
            "max_in_flight_per_destination",
            &raw.max_in_flight_per_destination,
            1usize,
            100_000,
            "requests",
        );
        let idle = c.number(
            "destination_idle_secs",
            &raw.destination_idle_secs,
            1u64,
            604_800,
            "seconds",
        );
        let destinations = DestinationPolicy::parse(&raw.allow_destinations)
            .map_err(|e| c.problem("allow_destinations", e))
            .ok();
        if c.flag("development", &raw.development) == Some(false) {
            use dispatch_config::development::{ADVICE, SECRET_KEY_MATERIAL};
            if let Some(weak) = Keyring::weak_keys(&raw.secret_keys, SECRET_KEY_MATERIAL) {
                c.problem("secret_keys", format!("{weak}: {ADVICE}"));
            }
        }
        let secret_keys = Keyring::parse(&raw.secret_keys)
            .map_err(|e| c.problem("secret_keys", e))
            .ok();
        let grace = c.number(
            "shutdown_grace_secs",
            &raw.shutdown_grace_secs,
            0u64,
            3600,
            "seconds",
        );
        let queue_vacuum = c.number(
            "queue_vacuum_secs",
            &raw.queue_vacuum_secs,
            0u64,
            3600,
            "seconds",
        );
        // As a subscription's own threshold, at most what fits its integer column.
        let auto_disable = c.number(
            "auto_disable_after_secs",
            &raw.auto_disable_after_secs,
            0u64,
            i32::MAX as u64,
            "seconds",
        );
        let log_format = c.parse::<LogFormat>("log_format", &raw.log_format);
        if let (Some(initial), Some(max)) = (initial, max_delay)
            && initial > Duration::from_secs(max)
        {
            c.problem(
                "retry_initial_delay_ms",
                "must not exceed retry_max_delay_secs",
            );
        }
        let settings = (|| {
            let request_timeout = timeout?;
            Some(Settings {
                addr: addr?,
                database: database.map(|d| DatabaseSettings {
                    url: d.url.into(),
                    max_connections: d.max_connections,
                    connect_timeout: d.connect_timeout,
                })?,
                synchronous_commit: synchronous_commit?,
                worker_id: worker_id?,
                max_in_flight: max_in_flight?,
                poll_interval: poll?,
                request_timeout,
                connect_timeout: connect?,
                lease: request_timeout + margin?,
                max_response_bytes: max_response?,
                stored_response_bytes: stored_response?,
                retry: RetryPolicy {
                    initial_delay: initial?,
                    max_delay: Duration::from_secs(max_delay?),
                    max_attempts: max_attempts?,
                    jitter: f64::from(jitter?) / 100.0,
                    permanent_statuses: permanent?,
                },
                destinations: destinations?,
                secret_keys: secret_keys?,
                resilience: ResilienceSettings {
                    breaker: BreakerSettings {
                        failure_ratio: f64::from(failure_percent?) / 100.0,
                        min_requests: min_requests?,
                        window: Duration::from_secs(window?),
                        open_for: Duration::from_secs(open_for?),
                        half_open_trials: trials?,
                    },
                    max_in_flight_per_destination: per_destination?,
                    idle_after: Duration::from_secs(idle?),
                },
                shutdown_grace: Duration::from_secs(grace?),
                queue_vacuum_every: match queue_vacuum? {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                auto_disable_after: match auto_disable? {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                log_format: log_format?,
            })
        })();
        c.finish(settings)
    }
}
