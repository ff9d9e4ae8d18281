//! Attempts that get no (complete) answer: timeouts, refused, dropped and reset connections,
//! answers trickled past the timeout.

use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE};

#[tokio::test]
async fn a_hanging_receiver_hits_the_request_timeout() {
    let h = Harness::new().await;
    h.receiver.set_default("/hang", Reply::hang());
    h.subscribe("sub_1", "/hang", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[("DISPATCH_REQUEST_TIMEOUT_MS", "300")]);

    let step = tokio::time::timeout(PATIENCE, worker.run_once()).await;
    assert_eq!(step.expect("the attempt gives up").unwrap(), 1);
    assert_eq!(h.receiver.requests("/hang").len(), 1);

    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "retrying");
    assert_eq!(delivery.attempts, 1);
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].error_code.as_deref(), Some("timeout"));
    assert_eq!(attempts[0].status_code, None);
    assert_eq!(attempts[0].response_body, None);
    assert!(attempts[0].error.is_some());
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_failure() {
    let h = Harness::new().await;
    // A port that was free a moment ago and that nobody listens on now.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    h.subscribe_url("sub_1", &format!("http://{closed}/hook"), None)
        .await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);

    assert_eq!(worker.run_once().await.unwrap(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "retrying");
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].error_code.as_deref(), Some("connection"));
    assert_eq!(attempts[0].status_code, None);
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_connection_failure() {
    let h = Harness::new().await;
    h.receiver.script("/rude", [Reply::close()]);
    h.subscribe("sub_1", "/rude", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);

    let step = tokio::time::timeout(PATIENCE, worker.run_once()).await;
    assert_eq!(step.expect("the attempt ends").unwrap(), 1);
    assert_eq!(h.receiver.requests("/rude").len(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "retrying");
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts[0].error_code.as_deref(), Some("connection"));
    assert_eq!(attempts[0].status_code, None);

    // The next attempt, on a fresh connection, gets the default 200.
    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(h.delivery("evt_1", "sub_1").await.status, "delivered");
}

#[tokio::test]
async fn a_reset_connection_is_a_connection_failure_and_the_retry_delivers() {
    let h = Harness::new().await;
    h.receiver.script("/reset", [Reply::reset()]);
    h.subscribe("sub_1", "/reset", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[]);

    let step = tokio::time::timeout(PATIENCE, worker.run_once()).await;
    assert_eq!(step.expect("the attempt ends").unwrap(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(delivery.status, "retrying");
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts[0].error_code.as_deref(), Some("connection"));
    assert_eq!(attempts[0].status_code, None);

    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(h.delivery("evt_1", "sub_1").await.status, "delivered");
    assert_eq!(h.receiver.requests("/reset").len(), 2);
}

#[tokio::test]
async fn an_answer_trickled_past_the_timeout_is_a_timeout_even_with_a_200_status() {
    let h = Harness::new().await;
    // 200 and its headers at once, then 64 bytes at 50 ms each: 3.2 s, past the 300 ms timeout.
    h.receiver.script(
        "/slow",
        [Reply::ok().trickle(std::time::Duration::from_millis(50))],
    );
    h.subscribe("sub_1", "/slow", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[("DISPATCH_REQUEST_TIMEOUT_MS", "300")]);

    let step = tokio::time::timeout(PATIENCE, worker.run_once()).await;
    assert_eq!(step.expect("the attempt gives up").unwrap(), 1);
    let delivery = h.delivery("evt_1", "sub_1").await;
    assert_eq!(
        delivery.status, "retrying",
        "a 200 without its body is no delivery"
    );
    let attempts = h.attempts_of(delivery.id).await;
    assert_eq!(attempts[0].error_code.as_deref(), Some("timeout"));
    assert_eq!(attempts[0].status_code, None);

    h.make_due().await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(h.delivery("evt_1", "sub_1").await.status, "delivered");
}
