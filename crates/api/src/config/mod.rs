//! The API's configuration: the keys, their defaults, and validation into [`Settings`]. Layering
//! (defaults → optional TOML file → `DATABASE_URL`/`ADDR` → `DISPATCH_*`) is
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

pub const DEFAULT_DATABASE_URL: &str =
    "postgres://postgres:postgres@localhost:5432/dispatch?sslmode=disable";
pub const DEFAULT_ADDR: &str = ":8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

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
}

/// The raw values as layered, before validation.
#[derive(Debug, Deserialize)]
struct Raw {
    addr: String,
    database_url: String,
    max_body_bytes: String,
    max_batch_body_bytes: String,
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
}

/// Every key the API reads: the table the README documents.
pub const KEYS: &[Key] = &[
    Key {
        name: "addr",
        env: "ADDR / DISPATCH_ADDR",
        default: DEFAULT_ADDR,
        help: "where the API listens (`:port` = all interfaces)",
    },
    Key {
        name: "database_url",
        env: "DATABASE_URL / DISPATCH_DATABASE_URL",
        default: DEFAULT_DATABASE_URL,
        help: "PostgreSQL connection string",
    },
    Key {
        name: "max_body_bytes",
        env: "DISPATCH_MAX_BODY_BYTES",
        default: "262144",
        help: "largest request body; larger gets 413",
    },
    Key {
        name: "max_batch_body_bytes",
        env: "DISPATCH_MAX_BATCH_BODY_BYTES",
        default: "1048576",
        help: "largest POST /events/batch body; larger gets 413",
    },
    Key {
        name: "db_max_connections",
        env: "DISPATCH_DB_MAX_CONNECTIONS",
        default: "16",
        help: "database pool size",
    },
    Key {
        name: "db_connect_timeout_ms",
        env: "DISPATCH_DB_CONNECT_TIMEOUT_MS",
        default: "5000",
        help: "wait for a pooled connection before answering 503",
    },
    Key {
        name: "http_workers",
        env: "DISPATCH_HTTP_WORKERS",
        default: "0",
        help: "HTTP worker threads (0 = one per CPU)",
    },
    Key {
        name: "body_read_timeout_ms",
        env: "DISPATCH_BODY_READ_TIMEOUT_MS",
        default: "10000",
        help: "longest a client may take to send a request body (408 request_timeout after)",
    },
    Key {
        name: "shutdown_timeout_secs",
        env: "DISPATCH_SHUTDOWN_TIMEOUT_SECS",
        default: "30",
        help: "grace period for in-flight requests on SIGTERM",
    },
    Key {
        name: "notify_interval_ms",
        env: "DISPATCH_NOTIFY_INTERVAL_MS",
        default: "2",
        help: "shortest gap between wake-ups sent to workers",
    },
    Key {
        name: "ingest_group_max_events",
        env: "DISPATCH_INGEST_GROUP_MAX_EVENTS",
        default: "256",
        help: "most concurrent POST /events requests stored in one commit",
    },
    Key {
        name: "ingest_committers",
        env: "DISPATCH_INGEST_COMMITTERS",
        default: "1",
        help: "groups of POST /events requests stored at the same time",
    },
    Key {
        name: "log_format",
        env: "DISPATCH_LOG_FORMAT",
        default: "auto",
        help: "json, text or auto (text on a terminal)",
    },
    Key {
        name: "api_keys",
        env: "DISPATCH_API_KEYS",
        default: "",
        help: "comma-separated API keys (at least 16 characters each) or sha256:<hex> of them",
    },
    Key {
        name: "development",
        env: "DISPATCH_DEVELOPMENT",
        default: "false",
        help: "true allows the published development API and sealing keys (never in production)",
    },
    Key {
        name: "auth_disabled",
        env: "DISPATCH_AUTH_DISABLED",
        default: "false",
        help: "true lets anyone call the API without a key (development only)",
    },
    Key {
        name: "secret_keys",
        env: "DISPATCH_SECRET_KEYS",
        default: "",
        help: "required: comma-separated <id>:<base64 of 32 bytes> keys sealing subscription \
               secrets at rest; the first seals, all open",
    },
    Key {
        name: "secret_rotation_overlap_secs",
        env: "DISPATCH_SECRET_ROTATION_OVERLAP_SECS",
        default: "86400",
        help: "default time a rotated-out secret keeps signing (0 to 2592000)",
    },
    Key {
        name: "allow_destinations",
        env: "DISPATCH_ALLOW_DESTINATIONS",
        default: "",
        help: "comma-separated CIDR ranges subscriptions may point to although private, etc.",
    },
];

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
        let url = c.database_url("database_url", &raw.database_url);
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
        let max_connections = c.number(
            "db_max_connections",
            &raw.db_max_connections,
            1u32,
            1000,
            "connections",
        );
        let connect_timeout = c.millis(
            "db_connect_timeout_ms",
            &raw.db_connect_timeout_ms,
            100,
            600_000,
        );
        let http_workers = c.number("http_workers", &raw.http_workers, 0usize, 1024, "threads");
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
        let settings = (|| {
            Some(Settings {
                addr: addr?,
                database: DatabaseSettings {
                    url: url?,
                    max_connections: max_connections?,
                    connect_timeout: connect_timeout?,
                },
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
            })
        })();
        c.finish(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The given variables, plus an API key unless they set the auth keys themselves.
    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.entry("DISPATCH_API_KEYS".to_owned())
            .or_insert_with(|| "a-test-key-of-some-length".to_owned());
        env.entry("DISPATCH_SECRET_KEYS".to_owned())
            .or_insert_with(|| TEST_SECRET_KEYS.to_owned());
        env
    }

    const TEST_SECRET_KEYS: &str = "new:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,\
                                    old:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";

    #[test]
    fn secret_keys_are_required_and_checked_and_the_overlap_is_bounded() {
        let s = Settings::load_from(None, &env(&[])).expect("valid");
        assert_eq!(s.secret_keys.active_id(), "new");
        assert_eq!(s.secret_keys.ids().collect::<Vec<_>>(), ["new", "old"]);
        assert_eq!(s.secret_rotation_overlap, Duration::from_secs(86_400));
        assert!(
            !format!("{s:?}").contains("AQIDBAUG"),
            "no key material in Debug"
        );

        let err =
            Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", "")])).expect_err("required");
        assert!(
            err.to_string()
                .contains("secret_keys (DISPATCH_SECRET_KEYS): at least one key is required"),
            "{err}"
        );
        let short = "k1:AAECAwQFBgcICQoLDA0ODw==";
        for (bad, expected) in [
            ("k1:not base64!", "standard base64 of exactly 32 bytes"),
            (short, "exactly 32 bytes (got 16)"),
            ("k/1:AAAA", "the key id must be"),
            ("just-a-key", "must be `<id>:<base64 of 32 bytes>`"),
        ] {
            let err =
                Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", bad)])).expect_err(bad);
            let text = err.to_string();
            assert!(
                text.contains("secret_keys (DISPATCH_SECRET_KEYS)"),
                "{text}"
            );
            assert!(text.contains(expected), "{bad}: {text}");
            assert!(!text.contains("AAECAwQF"), "key material in: {text}");
        }
        let twice = "a:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,\
                     a:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";
        let err = Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", twice)]))
            .expect_err("duplicate id");
        assert!(
            err.to_string()
                .contains("entry 2: the key id \"a\" is listed twice")
        );

        let s = Settings::load_from(
            None,
            &env(&[("DISPATCH_SECRET_ROTATION_OVERLAP_SECS", "0")]),
        )
        .expect("zero is allowed");
        assert_eq!(s.secret_rotation_overlap, Duration::ZERO);
        let err = Settings::load_from(
            None,
            &env(&[("DISPATCH_SECRET_ROTATION_OVERLAP_SECS", "2592001")]),
        )
        .expect_err("above 30 days");
        assert!(
            err.to_string()
                .contains("secret_rotation_overlap_secs (DISPATCH_SECRET_ROTATION_OVERLAP_SECS)"),
            "{err}"
        );
    }

    #[test]
    fn starting_without_an_api_key_is_refused_unless_auth_is_disabled() {
        let err =
            Settings::load_from(None, &env(&[("DISPATCH_API_KEYS", "")])).expect_err("no key");
        assert!(
            err.to_string().contains("api_keys (DISPATCH_API_KEYS)"),
            "{err}"
        );
        let s = Settings::load_from(
            None,
            &env(&[
                ("DISPATCH_API_KEYS", ""),
                ("DISPATCH_AUTH_DISABLED", "true"),
            ]),
        )
        .expect("disabled");
        assert_eq!(s.auth, crate::auth::Auth::Disabled);
        let err = Settings::load_from(None, &env(&[("DISPATCH_AUTH_DISABLED", "maybe")]))
            .expect_err("not a boolean");
        assert!(
            err.to_string()
                .contains("auth_disabled (DISPATCH_AUTH_DISABLED)"),
            "{err}"
        );
        let err = Settings::load_from(None, &env(&[("DISPATCH_API_KEYS", "short")]))
            .expect_err("too short");
        assert!(err.to_string().contains("entry 1"), "{err}");
    }

    #[test]
    fn allowed_destinations_are_read_with_the_workers_rule_and_bad_ranges_are_named() {
        let s = Settings::load_from(None, &env(&[])).expect("defaults are valid");
        assert_eq!(s.destinations, DestinationPolicy::default());
        let s = Settings::load_from(
            None,
            &env(&[("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8, ::1")]),
        )
        .expect("valid ranges");
        assert!(
            s.destinations
                .check("127.0.0.9".parse().expect("ip"))
                .is_ok()
        );
        assert!(
            s.destinations
                .check("10.0.0.1".parse().expect("ip"))
                .is_err()
        );
        let err = Settings::load_from(
            None,
            &env(&[("DISPATCH_ALLOW_DESTINATIONS", "10.0.0.0/8,not-a-range")]),
        )
        .expect_err("a bad range");
        assert!(
            err.to_string()
                .contains("allow_destinations (DISPATCH_ALLOW_DESTINATIONS)"),
            "{err}"
        );
    }

    #[test]
    fn defaults_follow_the_seed() {
        let s = Settings::load_from(None, &env(&[])).expect("defaults are valid");
        assert_eq!(s.addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(s.database.url, DEFAULT_DATABASE_URL);
        assert_eq!(s.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn environment_overrides_file_and_dispatch_prefix_overrides_seed_names() {
        let dir = std::env::temp_dir().join(format!("dispatch-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "max_body_bytes = 2048\naddr = \"127.0.0.1:9000\"\n").expect("write");
        let s = Settings::load_from(Some(&file), &env(&[])).expect("file is valid");
        assert_eq!(s.max_body_bytes, 2048);
        assert_eq!(s.addr.port(), 9000);

        let s = Settings::load_from(
            Some(&file),
            &env(&[
                ("ADDR", ":7000"),
                ("DATABASE_URL", "postgres://a@h/one"),
                ("DISPATCH_DATABASE_URL", "postgres://a@h/two"),
                ("DISPATCH_MAX_BODY_BYTES", "4096"),
            ]),
        )
        .expect("env is valid");
        assert_eq!(s.addr.port(), 7000);
        assert_eq!(s.database.url, "postgres://a@h/two");
        assert_eq!(s.max_body_bytes, 4096);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let err = Settings::load_from(
            None,
            &env(&[
                ("ADDR", "nonsense"),
                ("DATABASE_URL", "mysql://x/y"),
                ("DISPATCH_MAX_BODY_BYTES", "lots"),
                ("DISPATCH_DB_MAX_CONNECTIONS", "0"),
                ("DISPATCH_LOG_FORMAT", "xml"),
            ]),
        )
        .expect_err("must be refused");
        let text = err.to_string();
        for key in [
            "addr (ADDR",
            "database_url (DATABASE_URL",
            "max_body_bytes (DISPATCH_MAX_BODY_BYTES)",
            "db_max_connections (DISPATCH_DB_MAX_CONNECTIONS)",
            "log_format (DISPATCH_LOG_FORMAT)",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert_eq!(err.0.len(), 5, "{text}");
    }

    #[test]
    fn unsupported_tls_modes_and_missing_files_are_refused() {
        let err = Settings::load_from(
            None,
            &env(&[("DATABASE_URL", "postgres://h/db?sslmode=allow")]),
        )
        .expect_err("libpq's allow is not supported");
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        assert!(err.to_string().contains("sslmode=allow"), "{err}");
        let err = Settings::load_from(Some(Path::new("/nonexistent/dispatch.toml")), &env(&[]))
            .expect_err("missing file");
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn migrations_need_only_the_database_url() {
        let env: HashMap<String, String> = [
            ("DATABASE_URL", "postgres://u@db.example:5432/dispatch"),
            ("DISPATCH_API_KEYS", ""),
            ("DISPATCH_SECRET_KEYS", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(
            Settings::load_from(None, &env).is_err(),
            "serving needs keys"
        );
        let (url, _) = Settings::load_for_migrations(None, &env).expect("no keys needed");
        assert_eq!(url, "postgres://u@db.example:5432/dispatch");
        let bad: HashMap<String, String> = [("DATABASE_URL", "mysql://x/y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let err = Settings::load_for_migrations(None, &bad).expect_err("a bad URL still fails");
        assert!(err.to_string().contains("database_url"), "{err}");
    }

    #[test]
    fn published_development_keys_are_refused_unless_in_development() {
        use dispatch_config::development::{API_KEY, SECRET_KEYS};
        let zero = "z:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        for (key, value) in [
            ("DISPATCH_API_KEYS", API_KEY),
            ("DISPATCH_SECRET_KEYS", SECRET_KEYS),
            ("DISPATCH_SECRET_KEYS", zero),
        ] {
            let refused = Settings::load_from(None, &env(&[(key, value)]))
                .expect_err(value)
                .to_string();
            assert!(refused.contains("DISPATCH_DEVELOPMENT=true"), "{refused}");
            Settings::load_from(
                None,
                &env(&[(key, value), ("DISPATCH_DEVELOPMENT", "true")]),
            )
            .expect("allowed in development");
        }
    }
}
