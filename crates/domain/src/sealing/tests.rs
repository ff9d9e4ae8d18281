//! Tests of sealing: round trips, binding to subscription and key, rotation, malformed values.

#![allow(clippy::unwrap_used)]

use super::*;

fn key(byte: u8) -> String {
    STANDARD.encode([byte; KEY_LEN])
}

fn ring(text: &str) -> Keyring {
    Keyring::parse(text).unwrap()
}

#[test]
fn a_sealed_secret_opens_to_the_same_text_and_hides_it() {
    let keys = ring(&format!("k1:{}", key(1)));
    let sealed = keys.seal("sub_1", "whsec_plain-text-secret").unwrap();
    assert!(sealed.starts_with("v1:k1:"), "{sealed}");
    assert!(!sealed.contains("plain-text"), "{sealed}");
    assert_eq!(
        keys.open("sub_1", &sealed).unwrap(),
        "whsec_plain-text-secret"
    );
    assert_ne!(
        keys.seal("sub_1", "whsec_plain-text-secret").unwrap(),
        sealed,
        "a fresh nonce every time"
    );
    assert_eq!(key_id_of(&sealed), Ok("k1"));
    assert!(keys.is_active(&sealed));
}

#[test]
fn a_value_sealed_for_one_subscription_does_not_open_for_another() {
    let keys = ring(&format!("k1:{}", key(1)));
    let sealed = keys.seal("sub_1", "s3cret").unwrap();
    assert_eq!(
        keys.open("sub_2", &sealed),
        Err(SealError::NotAuthentic("k1".to_owned()))
    );
}

#[test]
fn old_keys_open_what_they_sealed_and_the_first_key_seals() {
    let old = ring(&format!("old:{}", key(1)));
    let sealed_old = old.seal("sub_1", "s3cret").unwrap();
    let rotated = ring(&format!("new:{}, old:{}", key(2), key(1)));
    assert_eq!(rotated.active_id(), "new");
    assert_eq!(rotated.open("sub_1", &sealed_old).unwrap(), "s3cret");
    assert!(!rotated.is_active(&sealed_old));
    let sealed_new = rotated.seal("sub_1", "s3cret").unwrap();
    assert!(sealed_new.starts_with("v1:new:"));
    assert_eq!(
        old.open("sub_1", &sealed_new),
        Err(SealError::UnknownKey("new".to_owned()))
    );
}

#[test]
fn other_key_material_under_the_same_id_or_an_altered_value_is_refused() {
    let sealed = ring(&format!("k1:{}", key(1)))
        .seal("sub_1", "s3cret")
        .unwrap();
    assert_eq!(
        ring(&format!("k1:{}", key(9))).open("sub_1", &sealed),
        Err(SealError::NotAuthentic("k1".to_owned()))
    );
    let keys = ring(&format!("k1:{}", key(1)));
    let mut payload = STANDARD.decode(sealed.rsplit(':').next().unwrap()).unwrap();
    payload[NONCE_LEN] ^= 1;
    let altered = format!("v1:k1:{}", STANDARD.encode(payload));
    assert_eq!(
        keys.open("sub_1", &altered),
        Err(SealError::NotAuthentic("k1".to_owned()))
    );
    // Relabelled with another key id that also holds the same key bytes: still refused.
    let twins = ring(&format!("k1:{},k2:{}", key(1), key(1)));
    let relabelled = sealed.replacen("v1:k1:", "v1:k2:", 1);
    assert_eq!(
        twins.open("sub_1", &relabelled),
        Err(SealError::NotAuthentic("k2".to_owned()))
    );
}

#[test]
fn values_that_are_not_sealed_secrets_are_malformed() {
    let keys = ring(&format!("k1:{}", key(1)));
    for bad in [
        "",
        "plain secret",
        "v1:k1",
        "v2:k1:AAAA",
        "v1:k!:AAAA",
        "v1:k1:not base64",
        "v1:k1:AAAA",
    ] {
        assert_eq!(
            keys.open("sub_1", bad),
            Err(SealError::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn configuration_errors_name_the_entry_and_never_the_key() {
    assert_eq!(Keyring::parse(""), Err(KeyringError::Empty));
    assert_eq!(Keyring::parse(" , "), Err(KeyringError::Empty));
    assert_eq!(
        Keyring::parse(&key(1)),
        Err(KeyringError::NotAPair { entry: 1 })
    );
    assert_eq!(
        Keyring::parse(&format!("k1:{},bad id:{}", key(1), key(2))),
        Err(KeyringError::BadId { entry: 2 })
    );
    assert_eq!(
        Keyring::parse(&format!("{}:{}", "k".repeat(33), key(1))),
        Err(KeyringError::BadId { entry: 1 })
    );
    let err = Keyring::parse("k1:not*base64").unwrap_err();
    assert!(
        matches!(err, KeyringError::BadKey { entry: 1, .. }),
        "{err}"
    );
    let short = STANDARD.encode([7u8; 16]);
    let err = Keyring::parse(&format!("k1:{short}")).unwrap_err();
    assert!(err.to_string().contains("(got 16)"), "{err}");
    assert!(!err.to_string().contains(&short), "{err}");
    assert_eq!(
        Keyring::parse(&format!("k1:{},k1:{}", key(1), key(2))),
        Err(KeyringError::DuplicateId {
            entry: 2,
            id: "k1".to_owned()
        })
    );
}

#[test]
fn debug_output_names_the_ids_only() {
    let keys = ring(&format!("new:{},old:{}", key(1), key(2)));
    let text = format!("{keys:?}");
    assert_eq!(text, r#"Keyring { active: "new", ids: ["new", "old"] }"#);
}

#[test]
fn generated_keys_are_valid_and_differ() {
    let a = generate_key().unwrap();
    let b = generate_key().unwrap();
    assert_ne!(a, b);
    assert!(Keyring::parse(&format!("k:{a}")).is_ok());
}

#[test]
fn all_zero_and_published_keys_are_weak() {
    let published = "iWiwm9xfOz0HBaXCssH2S9G/hiz6sRqUBSQ8IXLF9+Y=";
    let text = format!(
        "ok:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=, zero:{}, dev:{published}",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    assert_eq!(
        Keyring::weak_keys(&text, published).as_deref(),
        Some("key zero, dev is all zeros or the development key")
    );
    assert!(
        Keyring::weak_keys("ok:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=", published).is_none()
    );
}
