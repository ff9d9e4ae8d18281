//! Signing with sealed secrets: the plaintext is nowhere in the table yet every request is signed
//! with it; during a rotation's overlap both signature headers carry the new and the old
//! signature (checked with HMAC code written here and with the domain's verifiers), after it only
//! the new one; legacy plaintext rows still sign; a secret the worker cannot open fails the
//! attempt with `secret_unavailable` and sends nothing.

use std::time::Duration;

use dispatch_domain::signature::{
    SigningKey, verify_dispatch_signature, verify_standard_signature,
};
use dispatch_store::queries::subscriptions;
use dispatch_test_support::secrets::{TEST_SECRET_KEYS, test_keyring};
use serde_json::json;

use crate::helpers::Harness;
use crate::signing::{expected_dispatch_signature, expected_standard_signature};

/// The whole subscriptions table as text, as PostgreSQL holds it.
async fn table_text(h: &Harness) -> String {
    subscriptions::table_text(&mut *h.conn().await)
        .await
        .expect("the table is readable")
}

/// The two signature headers, timestamp and body of request number `n` (1-based, the last so
/// far) that `path` received.
fn nth_signatures(h: &Harness, path: &str, n: usize) -> (String, String, String, Vec<u8>) {
    let got = h.receiver.requests(path);
    assert_eq!(got.len(), n, "{path} has received {n} request(s)");
    let req = &got[n - 1];
    (
        req.header("x-dispatch-signature").unwrap().to_owned(),
        req.header("webhook-signature").unwrap().to_owned(),
        req.header("webhook-timestamp").unwrap().to_owned(),
        req.body.to_vec(),
    )
}

#[tokio::test]
async fn the_secret_is_not_in_the_table_yet_the_worker_signs_with_it() {
    let h = Harness::new().await;
    let secret = "whsec_c2VhbGVkLWJ1dC1zdGlsbC1zaWduaW5n";
    h.subscribe("sub_sealed", "/sealed", Some(secret)).await;
    let dump = table_text(&h).await;
    assert!(!dump.contains(secret), "plaintext stored: {dump}");
    assert!(!dump.contains("c2VhbGVkLWJ1dC1zdGlsbC1zaWduaW5n"), "{dump}");
    assert!(
        dump.contains("v1:test:"),
        "sealed with the active key: {dump}"
    );

    h.ingest("evt_1", "order.created", json!({"n": 1})).await;
    assert_eq!(h.worker(&[]).run_once().await.unwrap(), 1);

    let (dispatch, standard, timestamp, body) = nth_signatures(&h, "/sealed", 1);
    assert_eq!(dispatch, expected_dispatch_signature(secret, &body));
    assert_eq!(
        standard,
        expected_standard_signature(secret, "evt_1", &timestamp, &body)
    );
    assert_eq!(h.delivery("evt_1", "sub_sealed").await.status, "delivered");
}

#[tokio::test]
async fn during_the_overlap_both_secrets_sign_new_first_and_afterwards_only_the_new_one() {
    let h = Harness::new().await;
    let old = "the-old-shared-secret";
    let new = format!("whsec_{}", "bmV3LXNlY3JldC1ieXRlcw==");
    h.subscribe("sub_rot", "/rot", Some(old)).await;
    subscriptions::rotate_secret(
        &mut *h.conn().await,
        &test_keyring(),
        &dispatch_domain::TenantId::default_tenant(),
        "sub_rot",
        &new,
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .unwrap();
    let dump = table_text(&h).await;
    assert!(
        !dump.contains(old) && !dump.contains("bmV3LXNlY3JldC1ieXRlcw"),
        "{dump}"
    );

    h.ingest("evt_during", "order.created", json!({"n": 1}))
        .await;
    let worker = h.worker(&[]);
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let (dispatch, standard, timestamp, body) = nth_signatures(&h, "/rot", 1);
    // Computed here, from the contract: the new secret's signature, a space, the old one's.
    assert_eq!(
        dispatch,
        format!(
            "{} {}",
            expected_dispatch_signature(&new, &body),
            expected_dispatch_signature(old, &body)
        )
    );
    assert_eq!(
        standard,
        format!(
            "{} {}",
            expected_standard_signature(&new, "evt_during", &timestamp, &body),
            expected_standard_signature(old, "evt_during", &timestamp, &body)
        )
    );
    // A receiver holding either secret accepts the request; one holding neither does not.
    let ts: i64 = timestamp.parse().unwrap();
    for secret in [new.as_str(), old] {
        let key = SigningKey::from_secret(secret).unwrap();
        assert!(
            verify_dispatch_signature(&key, &dispatch, &body),
            "{secret}"
        );
        assert!(
            verify_standard_signature(&key, &standard, "evt_during", ts, &body),
            "{secret}"
        );
    }
    let stranger = SigningKey::from_secret("not-the-secret").unwrap();
    assert!(!verify_standard_signature(
        &stranger,
        &standard,
        "evt_during",
        ts,
        &body
    ));

    // The overlap ends (its expiry moved into the past, rather than waiting for it).
    h.execute(
        "UPDATE subscriptions SET previous_secret_expires_at = now() - interval '1 second'
          WHERE id = 'sub_rot'",
    )
    .await;
    h.ingest("evt_after", "order.created", json!({"n": 2}))
        .await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let (dispatch, standard, timestamp, body) = nth_signatures(&h, "/rot", 2);
    assert_eq!(dispatch, expected_dispatch_signature(&new, &body));
    assert_eq!(
        standard,
        expected_standard_signature(&new, "evt_after", &timestamp, &body)
    );
    let old_key = SigningKey::from_secret(old).unwrap();
    assert!(!verify_dispatch_signature(&old_key, &dispatch, &body));
}

#[tokio::test]
async fn a_plaintext_secret_stored_before_sealing_still_signs() {
    let h = Harness::new().await;
    let url = h.receiver.url("/legacy");
    h.execute(&format!(
        "INSERT INTO subscriptions (id, url, event_types, secret)
         VALUES ('sub_legacy', '{url}', '{{*}}', 'a-legacy-plaintext-secret')"
    ))
    .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    assert_eq!(h.worker(&[]).run_once().await.unwrap(), 1);
    let (dispatch, standard, timestamp, body) = nth_signatures(&h, "/legacy", 1);
    assert_eq!(
        dispatch,
        expected_dispatch_signature("a-legacy-plaintext-secret", &body)
    );
    assert_eq!(
        standard,
        expected_standard_signature("a-legacy-plaintext-secret", "evt_1", &timestamp, &body)
    );
}

#[tokio::test]
async fn a_secret_the_worker_cannot_open_fails_with_secret_unavailable_and_nothing_is_sent() {
    let h = Harness::new().await;
    h.subscribe("sub_a", "/a", Some("secret-of-a")).await;
    h.subscribe("sub_b", "/b", Some("secret-of-b")).await;
    // sub_b gets sub_a's sealed secret: a ciphertext moved to another row must not open.
    h.execute(
        "UPDATE subscriptions SET sealed_secret = (SELECT sealed_secret FROM subscriptions
                                                    WHERE id = 'sub_a')
          WHERE id = 'sub_b'",
    )
    .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    // A worker without the key that sealed the secrets (only `test-old`).
    let old_only = TEST_SECRET_KEYS
        .split(',')
        .find(|e| e.trim().starts_with("test-old:"))
        .unwrap()
        .trim()
        .to_owned();
    let keyless = h.worker(&[("DISPATCH_SECRET_KEYS", old_only.as_str())]);
    assert_eq!(keyless.run_once().await.unwrap(), 2);
    for id in ["sub_a", "sub_b"] {
        let delivery = h.delivery("evt_1", id).await;
        assert_eq!(delivery.status, "retrying", "{id}");
        let attempts = h.attempts_of(delivery.id).await;
        assert_eq!(
            attempts[0].error_code.as_deref(),
            Some("secret_unavailable")
        );
        let error = attempts[0].error.clone().unwrap();
        assert!(error.contains("\"test\""), "names the missing key: {error}");
        assert!(!error.contains("secret-of"), "{error}");
    }

    // With the right keys sub_a is delivered; sub_b's swapped value still does not open.
    h.make_due().await;
    assert_eq!(h.worker(&[]).run_once().await.unwrap(), 2);
    assert_eq!(h.delivery("evt_1", "sub_a").await.status, "delivered");
    let b = h.delivery("evt_1", "sub_b").await;
    assert_eq!(b.status, "retrying");
    let attempts = h.attempts_of(b.id).await;
    assert_eq!(
        attempts[1].error_code.as_deref(),
        Some("secret_unavailable")
    );
    assert!(
        attempts[1]
            .error
            .as_deref()
            .unwrap()
            .contains("does not open"),
        "{:?}",
        attempts[1].error
    );
    assert!(
        h.receiver.requests("/b").is_empty(),
        "nothing unsigned is sent"
    );
    assert_eq!(h.receiver.requests("/a").len(), 1);
}
