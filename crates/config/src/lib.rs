//! Layered configuration shared by Dispatch's binaries: defaults, then an optional TOML file,
//! then the environment (`DATABASE_URL` and `ADDR` as the seed names them, then `DISPATCH_*`,
//! which wins). Values arrive as text and are checked in one pass by [`Checker`], which names
//! the key and its variable in every problem it reports.

pub mod report;

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

/// One configuration key: its name in files, its environment variable(s) and its default.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    pub default: &'static str,
    pub help: &'static str,
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

/// Layers defaults, the file and the environment into `T` (a struct of `String` fields named
/// after the keys). `env` is passed in so tests never touch the process environment.
pub fn layer<T: DeserializeOwned>(
    keys: &[Key],
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<T, ConfigError> {
    let fail = |e: String| ConfigError(vec![e]);
    let mut builder = Config::builder();
    for key in keys {
        builder = builder
            .set_default(key.name, key.default)
            .map_err(|e| fail(format!("{}: {e}", key.name)))?;
    }
    if let Some(path) = file {
        if !path.is_file() {
            return Err(fail(format!(
                "config file {} does not exist",
                path.display()
            )));
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
        .map_err(|e| fail(e.to_string()))
}

/// The checked database keys (no `Debug`: the URL may carry a password; the binaries hold it as
/// `dispatch_store::DatabaseUrl`).
pub struct Database {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

/// Checks raw values, collecting every problem before failing.
pub struct Checker<'k> {
    keys: &'k [Key],
    problems: Vec<String>,
}

impl<'k> Checker<'k> {
    pub fn new(keys: &'k [Key]) -> Self {
        Self {
            keys,
            problems: Vec::new(),
        }
    }

    /// Records a problem with `key`.
    pub fn problem(&mut self, key: &str, message: impl fmt::Display) {
        let env = self
            .keys
            .iter()
            .find(|k| k.name == key)
            .map(|k| k.env)
            .unwrap_or("");
        self.problems.push(format!("{key} ({env}): {message}"));
    }

    /// A whole number in `min..=max`.
    pub fn number<T>(&mut self, key: &str, value: &str, min: T, max: T, unit: &str) -> Option<T>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        match value.trim().parse::<T>() {
            Ok(n) if n >= min && n <= max => Some(n),
            _ => {
                self.problem(
                    key,
                    format!("expected a whole number of {unit} from {min} to {max}, got {value:?}"),
                );
                None
            }
        }
    }

    /// Milliseconds in `min_ms..=max_ms`, as a Duration.
    pub fn millis(&mut self, key: &str, value: &str, min_ms: u64, max_ms: u64) -> Option<Duration> {
        self.number(key, value, min_ms, max_ms, "milliseconds")
            .map(Duration::from_millis)
    }

    /// Anything with a `FromStr` whose error explains itself.
    pub fn parse<T: FromStr>(&mut self, key: &str, value: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        value.parse::<T>().map_err(|e| self.problem(key, e)).ok()
    }

    pub fn addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        parse_addr(value).map_err(|e| self.problem(key, e)).ok()
    }

    pub fn database_url(&mut self, key: &str, value: &str) -> Option<String> {
        check_database_url(value)
            .map(|()| value.to_owned())
            .map_err(|e| self.problem(key, e))
            .ok()
    }

    /// The database keys both binaries read, checked by the same rules: `database_url`,
    /// `db_max_connections` (1 to 1000) and `db_connect_timeout_ms` (100 to 600000).
    pub fn database(
        &mut self,
        url: &str,
        max_connections: &str,
        connect_timeout_ms: &str,
    ) -> Option<Database> {
        let url = self.database_url("database_url", url);
        let max_connections = self.number(
            "db_max_connections",
            max_connections,
            1u32,
            1000,
            "connections",
        );
        let connect_timeout =
            self.millis("db_connect_timeout_ms", connect_timeout_ms, 100, 600_000);
        Some(Database {
            url: url?,
            max_connections: max_connections?,
            connect_timeout: connect_timeout?,
        })
    }

    /// `Ok(value)` when no problem was recorded, else every problem.
    /// `true`/`false` (also `1`/`0`, `yes`/`no`; empty is false).
    pub fn flag(&mut self, key: &str, value: &str) -> Option<bool> {
        match value.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" | "" => Some(false),
            other => {
                self.problem(key, format!("expected true or false, got {other:?}"));
                None
            }
        }
    }

    pub fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(v) if self.problems.is_empty() => Ok(v),
            _ => Err(ConfigError(self.problems)),
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

/// Checks a PostgreSQL URL: scheme, a database name, an `sslmode` this build supports (libpq's,
/// less `allow`) and, when `sslrootcert` names a CA file, that the file can be read. The store's
/// `connect` module is what applies them.
pub fn check_database_url(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("postgres://")
        .or_else(|| value.strip_prefix("postgresql://"))
        .ok_or("expected a postgres:// or postgresql:// URL")?;
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    if base.split_once('/').is_none_or(|(_, db)| db.is_empty()) {
        return Err("the URL must name a database, e.g. postgres://host:5432/dispatch".to_owned());
    }
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", "disable" | "prefer" | "require" | "verify-ca" | "verify-full")) => {}
            Some(("sslmode", other)) => {
                return Err(format!(
                    "sslmode={other} is not supported: use disable, prefer, require, verify-ca \
                     or verify-full"
                ));
            }
            Some(("sslrootcert", "")) => return Err("sslrootcert is empty".to_owned()),
            Some(("sslrootcert", "system")) => {}
            Some(("sslrootcert", path)) => {
                std::fs::read(path)
                    .map_err(|e| format!("sslrootcert={path}: the CA file cannot be read: {e}"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATABASE_KEYS: &[Key] = &[
        Key {
            name: "database_url",
            env: "DATABASE_URL / DISPATCH_DATABASE_URL",
            default: "",
            help: "",
        },
        Key {
            name: "db_max_connections",
            env: "DISPATCH_DB_MAX_CONNECTIONS",
            default: "",
            help: "",
        },
        Key {
            name: "db_connect_timeout_ms",
            env: "DISPATCH_DB_CONNECT_TIMEOUT_MS",
            default: "",
            help: "",
        },
    ];

    #[test]
    fn the_database_keys_are_checked_once_for_both_binaries_naming_each_bad_one() {
        let mut c = Checker::new(DATABASE_KEYS);
        let database = c
            .database("postgres://u:p@h:5432/db", "7", "250")
            .expect("valid");
        assert_eq!(
            (
                database.url.as_str(),
                database.max_connections,
                database.connect_timeout
            ),
            ("postgres://u:p@h:5432/db", 7, Duration::from_millis(250))
        );
        assert!(c.finish(Some(())).is_ok());

        let mut c = Checker::new(DATABASE_KEYS);
        assert!(c.database("mysql://h/db", "0", "99").is_none());
        let problems = c.finish(Some(())).expect_err("three bad keys").0;
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("database_url (DATABASE_URL / DISPATCH_DATABASE_URL)"));
        assert!(problems[1].starts_with("db_max_connections (DISPATCH_DB_MAX_CONNECTIONS)"));
        assert!(problems[1].contains("from 1 to 1000"), "{problems:?}");
        assert!(problems[2].starts_with("db_connect_timeout_ms (DISPATCH_DB_CONNECT_TIMEOUT_MS)"));
        assert!(problems[2].contains("from 100 to 600000"), "{problems:?}");
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

    #[test]
    fn database_urls_need_a_postgres_scheme_a_database_and_a_supported_sslmode() {
        assert!(check_database_url("postgres://u:p@h:5432/db?sslmode=disable").is_ok());
        assert!(check_database_url("postgresql://h/db").is_ok());
        assert!(check_database_url("mysql://h/db").is_err());
        assert!(check_database_url("postgres://h:5432").is_err());
        assert!(check_database_url("postgres://h:5432/").is_err());
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let url = format!("postgres://h/db?application_name=x&sslmode={mode}");
            assert_eq!(check_database_url(&url), Ok(()), "{mode}");
        }
        for mode in ["allow", "verify_full", "REQUIRE", ""] {
            let err = check_database_url(&format!("postgres://h/db?sslmode={mode}"))
                .expect_err("unknown sslmode");
            assert!(
                err.contains(&format!("sslmode={mode} is not supported"))
                    && err.contains("verify-full"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_ca_file_that_cannot_be_read_is_named() {
        let err =
            check_database_url("postgres://h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem")
                .expect_err("missing CA file");
        assert!(err.contains("sslrootcert=/no/such/ca.pem"), "{err}");
        let readable = format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}/Cargo.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        assert_eq!(check_database_url(&readable), Ok(()));
        assert_eq!(
            check_database_url("postgres://h/db?sslrootcert=system"),
            Ok(())
        );
        assert!(check_database_url("postgres://h/db?sslrootcert=").is_err());
    }
}

/// The published development keys (`cargo xtask dev`, the Compose file's defaults and the
/// README's examples). Anyone can read them, so both binaries refuse to start with them unless
/// `development` (`DISPATCH_DEVELOPMENT=true`) says this is a development machine.
pub mod development {
    /// The API key the README's examples send.
    pub const API_KEY: &str = "dev-key-change-me-0123";
    /// The key subscription secrets are sealed with in development.
    pub const SECRET_KEYS: &str = "dev:iWiwm9xfOz0HBaXCssH2S9G/hiz6sRqUBSQ8IXLF9+Y=";
    /// The base64 key material of [`SECRET_KEYS`].
    pub const SECRET_KEY_MATERIAL: &str = "iWiwm9xfOz0HBaXCssH2S9G/hiz6sRqUBSQ8IXLF9+Y=";
    /// What to say when a published key is refused.
    pub const ADVICE: &str = "it is published (development only): generate your own \
                              (`openssl rand -base64 32`), or set DISPATCH_DEVELOPMENT=true on a \
                              development machine";
}
