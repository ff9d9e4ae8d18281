//! Configuration: defaults, then an optional TOML file, then the environment (`DATABASE_URL` and
//! `ADDR` as the seed names them, then `DISPATCH_*`). Everything is validated here, once, and
//! every problem is reported with the key that caused it.

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
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
    /// actix worker threads (0 = one per CPU).
    pub http_workers: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
}

/// Every invalid key, each with what was wrong. Starting stops on this.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The raw values as layered by the `config` crate, before validation.
#[derive(Debug, Deserialize)]
struct Raw {
    addr: String,
    database_url: String,
    max_body_bytes: String,
    db_max_connections: String,
    db_connect_timeout_ms: String,
    http_workers: String,
    shutdown_timeout_secs: String,
    log_format: String,
}

/// Key → (environment variable, default). The single table the README documents.
pub const KEYS: [(&str, &str, &str); 8] = [
    ("addr", "ADDR / DISPATCH_ADDR", DEFAULT_ADDR),
    (
        "database_url",
        "DATABASE_URL / DISPATCH_DATABASE_URL",
        DEFAULT_DATABASE_URL,
    ),
    ("max_body_bytes", "DISPATCH_MAX_BODY_BYTES", "262144"),
    ("db_max_connections", "DISPATCH_DB_MAX_CONNECTIONS", "16"),
    (
        "db_connect_timeout_ms",
        "DISPATCH_DB_CONNECT_TIMEOUT_MS",
        "5000",
    ),
    ("http_workers", "DISPATCH_HTTP_WORKERS", "0"),
    (
        "shutdown_timeout_secs",
        "DISPATCH_SHUTDOWN_TIMEOUT_SECS",
        "30",
    ),
    ("log_format", "DISPATCH_LOG_FORMAT", "auto"),
];

impl Settings {
    /// Loads from the process environment and an optional file.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, &std::env::vars().collect())
    }

    /// Loads from the given environment (tests pass their own map; nothing global is touched).
    pub fn load_from(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let raw = layer(file, env).map_err(|e| ConfigError(vec![e]))?;
        validate(raw)
    }
}

fn layer(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Raw, String> {
    let mut builder = Config::builder();
    for (key, _, default) in KEYS {
        builder = builder
            .set_default(key, default)
            .map_err(|e| format!("{key}: {e}"))?;
    }
    if let Some(path) = file {
        if !path.is_file() {
            return Err(format!("config file {} does not exist", path.display()));
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
    }
    // The seed's names count as their DISPATCH_ twins unless the DISPATCH_ name is also set.
    let mut dispatch_env: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("DISPATCH_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for seed_name in ["DATABASE_URL", "ADDR"] {
        if let Some(value) = env.get(seed_name) {
            dispatch_env
                .entry(format!("DISPATCH_{seed_name}"))
                .or_insert_with(|| value.clone());
        }
    }
    builder = builder.add_source(
        Environment::with_prefix("DISPATCH")
            .prefix_separator("_")
            .source(Some(dispatch_env)),
    );
    builder
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| e.to_string())
}

fn env_name(key: &str) -> &'static str {
    KEYS.iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, env, _)| *env)
        .unwrap_or("")
}

fn problem(key: &str, message: impl fmt::Display) -> String {
    format!("{key} ({}): {message}", env_name(key))
}

fn parse_number<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
    problems: &mut Vec<String>,
    key: &str,
    value: &str,
    min: T,
    max: T,
    unit: &str,
) -> Option<T> {
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Some(n),
        _ => {
            problems.push(problem(
                key,
                format!("expected a whole number of {unit} from {min} to {max}, got {value:?}"),
            ));
            None
        }
    }
}

/// Parses the seed's `ADDR` forms: `:8080` (all interfaces), `host:port`, `[::1]:8080`.
pub fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    let full = if value.starts_with(':') {
        format!("0.0.0.0{value}")
    } else {
        value.to_owned()
    };
    if let Ok(addr) = full.parse() {
        return Ok(addr);
    }
    full.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("expected host:port or :port, got {value:?}"))
}

/// Checks a PostgreSQL URL: scheme, a database name, and an `sslmode` this build supports.
pub fn check_database_url(value: &str) -> Result<(), String> {
    if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
        return Err("expected a postgres:// or postgresql:// URL".to_owned());
    }
    if dispatch_store::admin::database_of(value).is_none() {
        return Err("the URL must name a database, e.g. postgres://host:5432/dispatch".to_owned());
    }
    let sslmode = value
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("sslmode="));
    match sslmode {
        None | Some("disable") | Some("prefer") | Some("allow") => Ok(()),
        Some(other) => Err(format!(
            "sslmode={other} is not supported yet: this build connects without TLS \
             (use sslmode=disable or prefer)"
        )),
    }
}

fn validate(raw: Raw) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let addr = parse_addr(&raw.addr)
        .map_err(|e| problems.push(problem("addr", e)))
        .ok();
    if let Err(e) = check_database_url(&raw.database_url) {
        problems.push(problem("database_url", e));
    }
    let max_body_bytes = parse_number(
        &mut problems,
        "max_body_bytes",
        &raw.max_body_bytes,
        1024usize,
        64 * 1024 * 1024,
        "bytes",
    );
    let max_connections = parse_number(
        &mut problems,
        "db_max_connections",
        &raw.db_max_connections,
        1u32,
        1000,
        "connections",
    );
    let connect_timeout_ms = parse_number(
        &mut problems,
        "db_connect_timeout_ms",
        &raw.db_connect_timeout_ms,
        100u64,
        600_000,
        "milliseconds",
    );
    let http_workers = parse_number(
        &mut problems,
        "http_workers",
        &raw.http_workers,
        0usize,
        1024,
        "threads",
    );
    let shutdown_secs = parse_number(
        &mut problems,
        "shutdown_timeout_secs",
        &raw.shutdown_timeout_secs,
        0u64,
        3600,
        "seconds",
    );
    let log_format = raw
        .log_format
        .parse::<LogFormat>()
        .map_err(|e| problems.push(problem("log_format", e)))
        .ok();

    match (
        addr,
        max_body_bytes,
        max_connections,
        connect_timeout_ms,
        http_workers,
        shutdown_secs,
        log_format,
    ) {
        (
            Some(addr),
            Some(max_body_bytes),
            Some(max),
            Some(timeout),
            Some(workers),
            Some(shutdown),
            Some(log_format),
        ) if problems.is_empty() => Ok(Settings {
            addr,
            database: DatabaseSettings {
                url: raw.database_url,
                max_connections: max,
                connect_timeout: Duration::from_millis(timeout),
            },
            max_body_bytes,
            http_workers: workers,
            shutdown_timeout: Duration::from_secs(shutdown),
            log_format,
        }),
        _ => Err(ConfigError(problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
            &env(&[("DATABASE_URL", "postgres://h/db?sslmode=verify-full")]),
        )
        .expect_err("TLS not supported yet");
        assert!(err.to_string().contains("sslmode=verify-full"));
        let err = Settings::load_from(Some(Path::new("/nonexistent/dispatch.toml")), &env(&[]))
            .expect_err("missing file");
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn seed_addr_forms_parse() {
        assert_eq!(parse_addr(":8080"), Ok("0.0.0.0:8080".parse().expect("a")));
        assert_eq!(
            parse_addr("127.0.0.1:0"),
            Ok("127.0.0.1:0".parse().expect("a"))
        );
        assert!(parse_addr("[::1]:8080").is_ok());
        assert!(parse_addr("8080").is_err());
    }
}
