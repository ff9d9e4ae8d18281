//! The API configuration's tests: defaults, layering, and every bad value reported with its key.

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
        let err = Settings::load_from(None, &env(&[("DISPATCH_SECRET_KEYS", bad)])).expect_err(bad);
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
    let err = Settings::load_from(None, &env(&[("DISPATCH_API_KEYS", "")])).expect_err("no key");
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
    let err =
        Settings::load_from(None, &env(&[("DISPATCH_API_KEYS", "short")])).expect_err("too short");
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
    assert_eq!(s.database.url.expose(), DEFAULT_DATABASE_URL);
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
    assert_eq!(s.database.url.expose(), "postgres://a@h/two");
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

#[test]
fn the_database_password_never_prints_in_the_settings_or_the_check_config_report() {
    let url = "postgres://app:s3cret-pw@db.internal:5432/dispatch?sslmode=disable";
    let s = Settings::load_from(None, &env(&[("DATABASE_URL", url)])).expect("valid");
    assert_eq!(s.database.url.expose(), url, "what connects gets all of it");
    for shown in [
        format!("{s:?}"),
        s.database.url.to_string(),
        format!("{:?}", s.database.url),
        crate::admin::check_config::report(Ok(s.clone())).1,
    ] {
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("app:***@db.internal"), "{shown}");
    }
}
