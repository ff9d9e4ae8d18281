//! What a destination receives: the envelope, the headers and both signatures, checked with
//! HMAC code written here from the delivery contract (not the worker's own signing code).

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ring::hmac;
use serde_json::{Value, json};

use crate::helpers::Harness;

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HMAC key of a secret: the base64-decoded part after `whsec_`, or else its UTF-8 bytes.
fn key_of(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD.decode(encoded).unwrap(),
        None => secret.as_bytes().to_vec(),
    }
}

pub(crate) fn expected_dispatch_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", lower_hex(&hmac_sha256(&key_of(secret), body)))
}

pub(crate) fn expected_standard_signature(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> String {
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "v1,{}",
        STANDARD.encode(hmac_sha256(&key_of(secret), &signed))
    )
}

#[tokio::test]
async fn a_delivery_arrives_with_the_envelope_headers_and_both_signatures_verifiable() {
    let h = Harness::new().await;
    let plain = "a plain shared secret";
    let key: Vec<u8> = (1u8..=24).collect();
    let whsec = format!("whsec_{}", STANDARD.encode(&key));
    h.subscribe("sub_plain", "/plain", Some(plain)).await;
    h.subscribe("sub_whsec", "/whsec", Some(&whsec)).await;
    h.subscribe("sub_nosecret", "/unsigned", None).await;
    let data = json!({"order": {"id": 42, "total": "12.50", "lines": [1, 2, 3]}, "note": "café ✓"});
    let event = h
        .ingest("evt_signed-1", "order.created", data.clone())
        .await;
    let worker = h.worker(&[]);

    let before = Utc::now();
    assert_eq!(worker.run_once().await.unwrap(), 3);
    let after = Utc::now();

    for (path, subscription, secret) in [
        ("/plain", "sub_plain", Some(plain)),
        ("/whsec", "sub_whsec", Some(whsec.as_str())),
        ("/unsigned", "sub_nosecret", None),
    ] {
        let got = h.receiver.requests(path);
        assert_eq!(got.len(), 1, "{path} is sent exactly one request");
        let req = &got[0];
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(req.header("content-type"), Some("application/json"));
        let agent = req.header("user-agent").unwrap();
        assert!(agent.starts_with("Dispatch/"), "User-Agent {agent:?}");
        assert_eq!(req.header("x-dispatch-event-id"), Some("evt_signed-1"));
        assert_eq!(req.header("x-dispatch-event-type"), Some("order.created"));
        assert_eq!(req.header("webhook-id"), Some("evt_signed-1"));

        // Both timestamps are the same Unix time in seconds, taken while the step ran.
        let timestamp = req.header("webhook-timestamp").unwrap();
        assert_eq!(req.header("x-dispatch-timestamp"), Some(timestamp));
        let seconds: i64 = timestamp.parse().unwrap();
        assert!(
            (before.timestamp()..=after.timestamp()).contains(&seconds),
            "timestamp {seconds} outside {before}..{after}"
        );

        // The envelope: exactly these five fields.
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let fields: BTreeSet<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from(["id", "type", "source", "data", "timestamp"])
        );
        assert_eq!(body["id"], "evt_signed-1");
        assert_eq!(body["type"], "order.created");
        assert_eq!(body["source"], "shop-service");
        assert_eq!(body["data"], data);
        let stamped: DateTime<Utc> =
            DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap())
                .unwrap()
                .into();
        assert_eq!(
            stamped, event.received_at,
            "timestamp is when the event was received"
        );
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

        match secret {
            Some(secret) => {
                assert_eq!(
                    req.header("x-dispatch-signature").unwrap(),
                    expected_dispatch_signature(secret, &req.body),
                    "X-Dispatch-Signature to {path}"
                );
                assert_eq!(
                    req.header("webhook-signature").unwrap(),
                    expected_standard_signature(secret, "evt_signed-1", timestamp, &req.body),
                    "webhook-signature to {path}"
                );
            }
            None => {
                assert_eq!(req.header("x-dispatch-signature"), None);
                assert_eq!(req.header("webhook-signature"), None);
            }
        }

        let delivery = h.delivery("evt_signed-1", subscription).await;
        assert_eq!(delivery.status, "delivered");
        assert_eq!(delivery.attempts, 1);
        let attempts = h.attempts_of(delivery.id).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].attempt, 1);
        assert_eq!(attempts[0].status_code, Some(200));
        assert_eq!(attempts[0].error_code, None);
    }
}

#[tokio::test]
async fn a_whsec_key_is_the_decoded_bytes_not_the_text_of_the_secret() {
    let h = Harness::new().await;
    let whsec = format!("whsec_{}", STANDARD.encode(b"sixteen byte key"));
    h.subscribe("sub_whsec", "/whsec", Some(&whsec)).await;
    h.ingest("evt_1", "order.created", json!({"n": 1})).await;
    assert_eq!(h.worker(&[]).run_once().await.unwrap(), 1);

    let req = h.receiver.requests("/whsec").remove(0);
    let signature = req.header("x-dispatch-signature").unwrap();
    assert_eq!(
        signature,
        format!(
            "sha256={}",
            lower_hex(&hmac_sha256(b"sixteen byte key", &req.body))
        )
    );
    assert_ne!(
        signature,
        format!(
            "sha256={}",
            lower_hex(&hmac_sha256(whsec.as_bytes(), &req.body))
        )
    );
}
