//! The worker configuration's tests: defaults, secret keys, retry settings, and every bad value
//! reported with its key.

use super::*;

const KEYS: &str = "k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// The given variables, plus secret keys unless they set them themselves.
fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.entry("DISPATCH_SECRET_KEYS".to_owned())
        .or_insert_with(|| KEYS.to_owned());
    env
}

#[test]
fn secret_keys_are_required_and_every_bad_entry_is_named() {
    let err = Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", "")])).expect_err("no key");
    assert!(
        err.to_string()
            .contains("secret_keys (DISPATCH_SECRET_KEYS): at least one key is required"),
        "{err}"
    );
    for (bad, expected) in [
        ("k1", "entry 1 must be `<id>:<base64 of 32 bytes>`"),
        ("k1:AAAA", "exactly 32 bytes (got 3)"),
        ("k1:***", "exactly 32 bytes"),
        ("bad id:AAAA", "entry 1: the key id must be"),
    ] {
        let err = Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", bad)])).expect_err(bad);
        assert!(err.to_string().contains(expected), "{bad}: {err}");
    }
    let twice = format!("{KEYS},{KEYS}");
    let err = Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", &twice)]))
        .expect_err("duplicate");
    assert!(err.to_string().contains("listed twice"), "{err}");
    let s = Settings::load_from(None, &env(&[])).expect("valid");
    assert_eq!(s.secret_keys.active_id(), "k1");
    assert!(
        !format!("{s:?}").contains("AQIDBAUG"),
        "Debug never shows key material"
    );
}

#[test]
fn defaults_follow_the_seed_and_the_lease_outlasts_the_timeout() {
    let s = Settings::load_from(None, &env(&[])).expect("defaults are valid");
    assert_eq!(s.addr.port(), 8081);
    assert_eq!(s.request_timeout, Duration::from_secs(30));
    assert!(s.lease > s.request_timeout);
    assert_eq!(s.retry, RetryPolicy::default());
    assert_eq!(s.resilience, ResilienceSettings::default());
    assert!(!s.worker_id.is_empty());
    assert_eq!(s.synchronous_commit, Durability::Durable);
}

#[test]
fn retry_settings_are_read_from_the_environment() {
    let s = Settings::load_from(
        None,
        &env(&[
            ("DISPATCH_RETRY_MAX_ATTEMPTS", "5"),
            ("DISPATCH_PERMANENT_STATUSES", "400, 410,422"),
            ("DISPATCH_WORKER_ID", "w-1"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.retry.max_attempts, 5);
    assert_eq!(s.retry.permanent_statuses, BTreeSet::from([400, 410, 422]));
    assert_eq!(s.worker_id, "w-1");
}

#[test]
fn every_bad_value_is_reported_with_its_key() {
    let err = Settings::load_from(
        None,
        &env(&[
            ("DISPATCH_MAX_IN_FLIGHT", "0"),
            ("DISPATCH_PERMANENT_STATUSES", "200"),
            ("DISPATCH_REQUEST_TIMEOUT_MS", "soon"),
            ("DISPATCH_RETRY_INITIAL_DELAY_MS", "7200000"),
            ("DISPATCH_RETRY_MAX_DELAY_SECS", "3600"),
            ("DISPATCH_SYNCHRONOUS_COMMIT", "sometimes"),
        ]),
    )
    .expect_err("must be refused");
    let text = err.to_string();
    for key in [
        "max_in_flight (DISPATCH_MAX_IN_FLIGHT)",
        "permanent_statuses (DISPATCH_PERMANENT_STATUSES)",
        "request_timeout_ms (DISPATCH_REQUEST_TIMEOUT_MS)",
        "retry_initial_delay_ms (DISPATCH_RETRY_INITIAL_DELAY_MS)",
        "synchronous_commit (DISPATCH_SYNCHRONOUS_COMMIT)",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
}

#[test]
fn the_published_development_sealing_key_is_refused_unless_in_development() {
    use dispatch_config::development::SECRET_KEYS;
    let refused = Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", SECRET_KEYS)]))
        .expect_err("published")
        .to_string();
    assert!(
        refused.contains("secret_keys (DISPATCH_SECRET_KEYS): key dev is all zeros"),
        "{refused}"
    );
    Settings::load_from(
        None,
        &env(&[
            ("DISPATCH_SECRET_KEYS", SECRET_KEYS),
            ("DISPATCH_DEVELOPMENT", "true"),
        ]),
    )
    .expect("allowed in development");
}

#[test]
fn auto_disable_defaults_to_five_days_zero_is_never_and_bad_values_name_the_key() {
    let s = Settings::load_from(None, &env(&[])).expect("defaults are valid");
    assert_eq!(
        s.auto_disable_after,
        Some(Duration::from_secs(5 * 24 * 3600))
    );
    let s = Settings::load_from(None, &env(&[("DISPATCH_AUTO_DISABLE_AFTER_SECS", "0")]))
        .expect("0 is valid");
    assert_eq!(s.auto_disable_after, None);
    let s = Settings::load_from(None, &env(&[("DISPATCH_AUTO_DISABLE_AFTER_SECS", "2")]))
        .expect("2 is valid");
    assert_eq!(s.auto_disable_after, Some(Duration::from_secs(2)));
    for bad in ["-1", "5d", "2147483648"] {
        let err = Settings::load_from(None, &env(&[("DISPATCH_AUTO_DISABLE_AFTER_SECS", bad)]))
            .expect_err(bad);
        assert!(
            err.to_string()
                .contains("auto_disable_after_secs (DISPATCH_AUTO_DISABLE_AFTER_SECS)"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_database_password_never_prints_in_the_settings_or_the_check_config_report() {
    let url = "postgres://app:s3cret-pw@db.internal:5432/dispatch?sslmode=disable";
    let s = Settings::load_from(None, &env(&[("DATABASE_URL", url)])).expect("valid");
    assert_eq!(s.database.url.expose(), url, "what connects gets all of it");
    for shown in [
        format!("{s:?}"),
        s.database.url.to_string(),
        format!("{:?}", s.database.url),
        crate::cli::report(Ok(s.clone())).1,
    ] {
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("app:***@db.internal"), "{shown}");
    }
}
