//! Answers a destination may give that the worker must not be led by: a redirect is not
//! followed (it is a failed attempt, retried), and a huge or endless body is read only up to
//! `max_response_bytes`, with `stored_response_bytes` of it kept on the attempt.

use serde_json::json;

use dispatch_test_support::receiver::Reply;

use crate::helpers::Harness;

#[tokio::test]
async fn a_redirect_is_not_followed_and_counts_as_a_failed_attempt() {
    let h = Harness::new().await;
    let elsewhere = h.receiver.url("/elsewhere");
    h.receiver
        .set_default("/moved", Reply::status(302).location(elsewhere));
    h.subscribe("sub_moved", "/moved", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);
    worker.run_once().await.unwrap();

    assert_eq!(h.receiver.requests("/moved").len(), 1);
    assert!(
        h.receiver.requests("/elsewhere").is_empty(),
        "the redirect was followed"
    );
    let delivery = h.delivery("evt_1", "sub_moved").await;
    assert_eq!(delivery.status, "retrying");
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts[0].status_code, Some(302));
    assert_eq!(attempts[0].error_code.as_deref(), Some("http_status"));
}

#[tokio::test]
async fn an_endless_body_is_read_only_up_to_the_cap() {
    let h = Harness::new().await;
    // 100 000 bytes, one a millisecond: reading it all would take 100 s, far past the timeout.
    h.receiver.set_default(
        "/chatty",
        Reply::ok()
            .body(vec![b'x'; 100_000])
            .trickle(std::time::Duration::from_millis(1)),
    );
    h.subscribe("sub_chatty", "/chatty", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[
        ("DISPATCH_MAX_RESPONSE_BYTES", "64"),
        ("DISPATCH_STORED_RESPONSE_BYTES", "32"),
        ("DISPATCH_REQUEST_TIMEOUT_MS", "10000"),
    ]);
    worker.run_once().await.unwrap();

    let delivery = h.delivery("evt_1", "sub_chatty").await;
    assert_eq!(delivery.status, "delivered", "answered within the cap");
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts[0].status_code, Some(200));
    assert_eq!(
        attempts[0].response_body.as_deref(),
        Some("x".repeat(32).as_str()),
        "stored_response_bytes of it kept"
    );
}
