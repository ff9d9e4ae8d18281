//! A network blackhole between a worker and PostgreSQL: a TCP proxy that stops forwarding
//! without closing anything (the worker's kernel sees its data acknowledged, so only a timeout
//! of the worker's own can notice). The cut-off worker gives its step up within its lease
//! instead of hanging, another worker finishes the work once the lease expires, the cut-off
//! worker's late outcome is fenced off, and it carries on by itself once the network heals.

use dispatch_test_support::proxy::TcpProxy;
use dispatch_test_support::receiver::Reply;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE, eventually};

#[tokio::test]
async fn a_worker_cut_off_by_a_silent_network_gives_up_is_fenced_and_carries_on() {
    let h = Harness::new().await;
    h.subscribe("sub_1", "/hook", None).await;
    // The first request is held, so the attempt is in flight when the network goes silent.
    h.receiver.script("/hook", [Reply::ok().held()]);
    let proxy = TcpProxy::for_postgres(h.db.url()).await.unwrap();
    // A 2 s lease: a step waits at most that long for the database.
    let timings = [
        ("DISPATCH_REQUEST_TIMEOUT_MS", "1000"),
        ("DISPATCH_LEASE_MARGIN_MS", "1000"),
        ("DISPATCH_DB_CONNECT_TIMEOUT_MS", "500"),
    ];
    let mut settings = h.settings(&timings);
    settings.database.url = proxy.url_for(h.db.url()).into();
    let cut_off = dispatch_worker::Worker::new(&settings).unwrap();
    let mut other = timings.to_vec();
    other.push(("DISPATCH_WORKER_ID", "worker-b"));
    let other = h.worker(&other);

    h.ingest("evt_1", "a.b", json!({})).await;
    let step = tokio::spawn({
        let cut_off = cut_off.clone();
        async move { cut_off.run_once().await }
    });
    h.receiver.wait_for("/hook", 1, PATIENCE).await;
    proxy.stall();
    h.receiver.release(1);
    // Recording the outcome gets no answer: the step must give up, not hang.
    let given_up = tokio::time::timeout(PATIENCE, step)
        .await
        .expect("the step gives up while the network is silent")
        .unwrap();
    let error = given_up.expect_err("nothing could be recorded");
    assert!(error.is_unavailable(), "{error:?}");

    // The lease expires; the other worker sends it again (at least once) and records it.
    eventually(
        "the other worker takes the expired lease",
        PATIENCE,
        || async { other.run_once().await.unwrap() == 1 },
    )
    .await;
    assert_eq!(h.receiver.requests("/hook").len(), 2);

    // The network heals: whatever the proxy held reaches PostgreSQL (the cut-off worker's
    // outcome among it) and is fenced off; the same worker object claims new work.
    proxy.resume();
    h.ingest("evt_2", "a.b", json!({})).await;
    eventually("the cut-off worker works again", PATIENCE, || async {
        cut_off.run_once().await.is_ok_and(|n| n == 1)
    })
    .await;
    let first = h.delivery("evt_1", "sub_1").await;
    assert_eq!(first.status, "delivered");
    let attempts = h.attempts_of(first.id).await;
    assert_eq!(
        attempts.len(),
        1,
        "only the other worker's attempt: {attempts:?}"
    );
    assert_eq!(h.delivery("evt_2", "sub_1").await.status, "delivered");
}
