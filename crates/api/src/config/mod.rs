//! The API's configuration: validation into [`Settings`] of the keys `keys.rs` lists with their
//! defaults. Layering (defaults → optional TOML file → `DATABASE_URL`/`ADDR` → `DISPATCH_*`) is
//! [`dispatch_config::layer`]'s; every problem is reported with the key that caused it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dispatch_config::{Checker, layer};
pub use dispatch_config::{ConfigError, Key, parse_addr};
use dispatch_domain::destination::DestinationPolicy;
use dispatch_store::DatabaseSettings;
use dispatch_telemetry::LogFormat;
use serde::Deserialize;

mod keys;
#[cfg(test)]
mod tests;

pub use keys::{DEFAULT_ADDR, DEFAULT_DATABASE_URL, DEFAULT_MAX_BODY_BYTES, KEYS};

/// The API's validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub database: DatabaseSettings,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Largest `POST /events/batch` body accepted.
    pub max_batch_body_bytes: usize,
    /// actix worker threads (0 = one per CPU).
    pub http_workers: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Longest a client may take to send a request body once its head has arrived (408).
    pub body_read_timeout: Duration,
    /// Shortest gap between two wake-up NOTIFYs sent to the workers.
    pub notify_interval: Duration,
    /// How `POST /events` requests are grouped into commits.
    pub ingest_groups: crate::committer::GroupSettings,
    pub log_format: LogFormat,
    /// Who may call the API.
    pub auth: crate::auth::Auth,
    /// Seals subscription secrets (the first key) and opens them (every key).
    pub secret_keys: dispatch_domain::sealing::Keyring,
    /// How long a rotated-out secret keeps signing when `POST /subscriptions/{id}/rotate-secret`
    /// does not say.
    pub secret_rotation_overlap: Duration,
    /// Where subscriptions may point: public addresses plus `allow_destinations` (the same key
    /// and rule as the worker's).
    pub destinations: DestinationPolicy,
    /// The operator console (`/console`).
    pub console: dispatch_console::ConsoleSettings,
    /// Every tenant's limits unless it has its own (`None`: no limit).
    pub tenant_defaults: dispatch_store::queries::tenants::TenantLimits,
}

/// The raw values as layered, before validation.
#[derive(Debug, Deserialize)]
struct Raw {
    addr: String,
    database_url: String,
    max_body_bytes: String,
    max_batch_body_bytes: String,
    tenant_ingest_rate_per_sec: String,
    tenant_ingest_burst: String,
    tenant_max_subscriptions: String,
    tenant_max_payload_bytes: String,
    db_max_connections: String,
    db_connect_timeout_ms: String,
    http_workers: String,
    shutdown_timeout_secs: String,
    body_read_timeout_ms: String,
    notify_interval_ms: String,
    ingest_group_max_events: String,
    ingest_committers: String,
    log_format: String,
    api_keys: String,
    auth_disabled: String,
    development: String,
    secret_keys: String,
    secret_rotation_overlap_secs: String,
    allow_destinations: String,
    console_enabled: String,
    console_secure_cookies: String,
    console_session_idle_secs: String,
    console_session_max_secs: String,
}

impl Settings {
    /// Loads from the process environment and an optional file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, &std::env::vars().collect())
    }

    /// What `migrate` needs: the database URL and the log format, from the same layers; the
    /// API's keys, which a migration does not use, are neither required nor checked.
    pub fn load_for_migrations(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<(String, LogFormat), ConfigError> {
        let raw: Raw = layer(KEYS, file, env)?;
        let mut c = Checker::new(KEYS);
        let url = c.database_url("database_url", &raw.database_url);
        let log_format = c.parse::<LogFormat>("log_format", &raw.log_format);
        let settings = url.zip(log_format);
        c.finish(settings)
    }

    /// Loads from the given environment (tests pass their own map; nothing global is touched).
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
        let max_body_bytes = c.number(
            "max_body_bytes",
            &raw.max_body_bytes,
            1024usize,
            64 << 20,
            "bytes",
        );
        let max_batch_body_bytes = c.number(
            "max_batch_body_bytes",
            &raw.max_batch_body_bytes,
            1024usize,
            64 << 20,
            "bytes",
        );
        let http_workers = c.number("http_workers", &raw.http_workers, 0usize, 1024, "threads");
        let tenant_defaults = tenant_defaults(&mut c, &raw);
        let body_read_timeout = c.number(
            "body_read_timeout_ms",
            &raw.body_read_timeout_ms,
            100u64,
            600_000,
            "milliseconds",
        );
        let shutdown = c.number(
            "shutdown_timeout_secs",
            &raw.shutdown_timeout_secs,
            0u64,
            3600,
            "seconds",
        );
        let notify_interval = c.millis("notify_interval_ms", &raw.notify_interval_ms, 0, 10_000);
        let group_max = c.number(
            "ingest_group_max_events",
            &raw.ingest_group_max_events,
            1usize,
            1000,
            "events",
        );
        let committers = c.number(
            "ingest_committers",
            &raw.ingest_committers,
            1usize,
            64,
            "committers",
        );
        let log_format = c.parse::<LogFormat>("log_format", &raw.log_format);
        let auth_disabled = c.flag("auth_disabled", &raw.auth_disabled);
        let development = c.flag("development", &raw.development);
        let keys = crate::auth::parse_keys(&raw.api_keys)
            .map_err(|e| c.problem("api_keys", e))
            .ok();
        if development == Some(false) {
            use dispatch_config::development::{ADVICE, SECRET_KEY_MATERIAL};
            if keys
                .as_deref()
                .is_some_and(crate::auth::accepts_development_key)
            {
                c.problem(
                    "api_keys",
                    format!("contains the development key: {ADVICE}"),
                );
            }
            if let Some(weak) =
                dispatch_domain::sealing::Keyring::weak_keys(&raw.secret_keys, SECRET_KEY_MATERIAL)
            {
                c.problem("secret_keys", format!("{weak}: {ADVICE}"));
            }
        }
        let auth = match (auth_disabled, keys) {
            (Some(true), _) => Some(crate::auth::Auth::Disabled),
            (Some(false), Some(keys)) if keys.is_empty() => {
                c.problem(
                    "api_keys",
                    "at least one API key is required (or DISPATCH_AUTH_DISABLED=true, for \
                     development only)",
                );
                None
            }
            (Some(false), Some(keys)) => Some(crate::auth::Auth::Keys(keys)),
            _ => None,
        };
        let destinations = DestinationPolicy::parse(&raw.allow_destinations)
            .map_err(|e| c.problem("allow_destinations", e))
            .ok();
        let secret_keys = dispatch_domain::sealing::Keyring::parse(&raw.secret_keys)
            .map_err(|e| c.problem("secret_keys", e))
            .ok();
        let overlap = c.number(
            "secret_rotation_overlap_secs",
            &raw.secret_rotation_overlap_secs,
            0u64,
            crate::routes::secrets::MAX_OVERLAP_SECS,
            "seconds",
        );
        let console_enabled = c.flag("console_enabled", &raw.console_enabled);
        let console_secure = c.flag("console_secure_cookies", &raw.console_secure_cookies);
        let console_idle = c.number(
            "console_session_idle_secs",
            &raw.console_session_idle_secs,
            60u64,
            86_400,
            "seconds",
        );
        let console_max = c.number(
            "console_session_max_secs",
            &raw.console_session_max_secs,
            300u64,
            604_800,
            "seconds",
        );
        if let (Some(idle), Some(max)) = (console_idle, console_max)
            && idle > max
        {
            c.problem(
                "console_session_idle_secs",
                format!("must not exceed console_session_max_secs ({max})"),
            );
        }
        let settings = (|| {
            Some(Settings {
                addr: addr?,
                database: database.map(|d| DatabaseSettings {
                    url: d.url.into(),
                    max_connections: d.max_connections,
                    connect_timeout: d.connect_timeout,
                })?,
                max_body_bytes: max_body_bytes?,
                max_batch_body_bytes: max_batch_body_bytes?,
                http_workers: http_workers?,
                shutdown_timeout: Duration::from_secs(shutdown?),
                body_read_timeout: Duration::from_millis(body_read_timeout?),
                notify_interval: notify_interval?,
                ingest_groups: crate::committer::GroupSettings {
                    max_events: group_max?,
                    committers: committers?,
                },
                log_format: log_format?,
                auth: auth?,
                secret_keys: secret_keys?,
                secret_rotation_overlap: Duration::from_secs(overlap?),
                destinations: destinations?,
                console: dispatch_console::ConsoleSettings {
                    enabled: console_enabled?,
                    secure_cookies: console_secure?,
                    session_idle: Duration::from_secs(console_idle?),
                    session_lifetime: Duration::from_secs(console_max?),
                },
                tenant_defaults: tenant_defaults?,
            })
        })();
        c.finish(settings)
    }
}

/// The `tenant_*` keys: each 0 means "no limit" (the payload: `max_body_bytes`).
fn tenant_defaults(
    c: &mut Checker,
    raw: &Raw,
) -> Option<dispatch_store::queries::tenants::TenantLimits> {
    let rate = c.number(
        "tenant_ingest_rate_per_sec",
        &raw.tenant_ingest_rate_per_sec,
        0u32,
        1_000_000,
        "events per second",
    );
    let burst = c.number(
        "tenant_ingest_burst",
        &raw.tenant_ingest_burst,
        0i32,
        1_000_000,
        "events",
    );
    let subscriptions = c.number(
        "tenant_max_subscriptions",
        &raw.tenant_max_subscriptions,
        0i32,
        1_000_000,
        "subscriptions",
    );
    let payload = c.number(
        "tenant_max_payload_bytes",
        &raw.tenant_max_payload_bytes,
        0i32,
        64 << 20,
        "bytes",
    );
    let some = |n: i32| (n > 0).then_some(n);
    Some(dispatch_store::queries::tenants::TenantLimits {
        ingest_rate_per_sec: Some(f64::from(rate?)).filter(|r| *r > 0.0),
        ingest_burst: some(burst?),
        max_subscriptions: some(subscriptions?),
        max_payload_bytes: some(payload?),
    })
}
