//! Golden vectors computed outside Dispatch (Python's hmac and the standardwebhooks library):
//! both signature forms must match them byte for byte, and the verification helpers must accept
//! them (also as one of several signatures, as sent during a secret rotation).

use dispatch_domain::signature::{
    SigningKey, verify_dispatch_signature, verify_standard_signature,
};
use serde_json::Value;

#[test]
fn both_signature_forms_match_the_externally_computed_vectors() {
    let text = include_str!("../../../testdata/signature-vectors.json");
    let vectors: Value = serde_json::from_str(text).expect("vectors are JSON");
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "expected the full vector set");
    for case in cases {
        let field = |name: &str| case[name].as_str().unwrap_or_else(|| panic!("{name}"));
        let key = SigningKey::from_secret(field("secret")).expect("secret");
        let body = field("body").as_bytes();
        assert_eq!(
            key.dispatch_signature(body),
            field("x_dispatch_signature"),
            "{}",
            field("secret_kind")
        );
        let timestamp = case["timestamp"].as_i64().expect("timestamp");
        assert_eq!(
            key.standard_signature(field("webhook_id"), timestamp, body),
            field("webhook_signature"),
            "{} / {}",
            field("secret_kind"),
            field("webhook_id")
        );
        let other = SigningKey::from_secret("another-secret").expect("secret");
        let dispatch = format!(
            "{} {}",
            other.dispatch_signature(body),
            field("x_dispatch_signature")
        );
        assert!(verify_dispatch_signature(&key, &dispatch, body));
        let standard = format!(
            "{} {}",
            other.standard_signature(field("webhook_id"), timestamp, body),
            field("webhook_signature")
        );
        assert!(verify_standard_signature(
            &key,
            &standard,
            field("webhook_id"),
            timestamp,
            body
        ));
    }
}
