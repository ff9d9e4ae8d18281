//! `check-config` for the API: loads its configuration exactly as `serve` does and reports `OK`
//! with the effective values (nothing secret), or every problem.

use std::collections::HashMap;
use std::path::Path;

use dispatch_config::ConfigError;
use dispatch_config::report::{key_ids, lowercase_debug, millis};

use crate::Settings;
use crate::auth::Auth;

/// The API's effective values, keyed as in its configuration table; nothing secret (the
/// database password is masked, API keys counted, secret keys named by id).
pub fn values(s: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("addr", s.addr.to_string()),
        ("database_url", s.database.url.to_string()),
        ("db_max_connections", s.database.max_connections.to_string()),
        ("db_connect_timeout_ms", millis(s.database.connect_timeout)),
        ("max_body_bytes", s.max_body_bytes.to_string()),
        ("max_batch_body_bytes", s.max_batch_body_bytes.to_string()),
        (
            "tenant_ingest_rate_per_sec",
            limit(s.tenant_defaults.ingest_rate_per_sec),
        ),
        ("tenant_ingest_burst", limit(s.tenant_defaults.ingest_burst)),
        (
            "tenant_max_subscriptions",
            limit(s.tenant_defaults.max_subscriptions),
        ),
        (
            "tenant_max_payload_bytes",
            limit(s.tenant_defaults.max_payload_bytes),
        ),
        ("http_workers", s.http_workers.to_string()),
        ("body_read_timeout_ms", millis(s.body_read_timeout)),
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
                Auth::Disabled => "DISABLED (anyone may call)".to_owned(),
                Auth::Keys(keys) => format!("{} API key(s)", keys.len()),
            },
        ),
        ("secret_keys", key_ids(s.secret_keys.ids())),
        (
            "secret_rotation_overlap_secs",
            s.secret_rotation_overlap.as_secs().to_string(),
        ),
        ("console_enabled", s.console.enabled.to_string()),
        (
            "console_secure_cookies",
            s.console.secure_cookies.to_string(),
        ),
        (
            "console_session_idle_secs",
            s.console.session_idle.as_secs().to_string(),
        ),
        (
            "console_session_max_secs",
            s.console.session_lifetime.as_secs().to_string(),
        ),
    ]
}

/// The report for already loaded settings: `(valid, text)`.
pub fn report(loaded: Result<Settings, ConfigError>) -> (bool, String) {
    dispatch_config::report::report("dispatch-api", loaded, values)
}

/// Loads the API's configuration from `file` and `env` and reports on it.
pub fn check(file: Option<&Path>, env: &HashMap<String, String>) -> (bool, String) {
    report(Settings::load_from(file, env))
}

/// A tenant limit as configured: its value, or 0 (none).
fn limit(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "0".to_owned(), |v| v.to_string())
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
    fn a_valid_configuration_is_reported_with_its_values_and_no_secret() {
        let vars = env(&[
            ("DATABASE_URL", "postgres://app:s3cret@db:5432/dispatch"),
            ("DISPATCH_API_KEYS", "an-api-key-not-to-print"),
            (
                "DISPATCH_SECRET_KEYS",
                "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,\
                 k1:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=",
            ),
        ]);
        let (ok, text) = check(None, &vars);
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
    }

    #[test]
    fn an_invalid_configuration_lists_every_problem() {
        let vars = env(&[("ADDR", "nonsense"), ("DISPATCH_MAX_BODY_BYTES", "12")]);
        let (ok, text) = check(None, &vars);
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
    }
}
