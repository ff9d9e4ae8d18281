//! Per-key ordering with real worker processes: three `dispatch-worker` processes deliver 10 keys
//! × 15 events to one per-key subscription whose receiver answers 500 at random, and one worker
//! is killed with SIGKILL mid-run. Every key's events arrive in the order they were accepted
//! (a retry or a resend after the kill repeats an event, never goes back to an earlier one).

use std::collections::BTreeMap;
use std::time::Duration;

use dispatch_test_support::receiver::Reply;
use serde_json::{Value, json};
use tokio::process::Child;

use crate::helpers::{Harness, PATIENCE, eventually};
use crate::processes::{sigterm, spawn_worker};

const KEYS: usize = 10;
const PER_KEY: usize = 15;

/// A repeatable sequence of replies: about one in four is a 500, each after a few ms.
fn flaky_replies(n: usize) -> Vec<Reply> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let delay = Duration::from_millis(1 + state % 5);
            if state.is_multiple_of(4) {
                Reply::status(500).delay(delay)
            } else {
                Reply::ok().delay(delay)
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_random_500s_and_a_sigkill_keep_every_key_in_order() {
    let h = Harness::new().await;
    h.receiver.script("/hook", flaky_replies(400));
    h.receiver
        .set_default("/hook", Reply::ok().delay(Duration::from_millis(2)));
    h.subscribe("sub_o", "/hook", None).await;
    assert_eq!(
        h.execute("UPDATE subscriptions SET ordering = 'per_key' WHERE id = 'sub_o'")
            .await,
        1
    );
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            h.ingest_keyed(
                &format!("evt_{key}_{seq}"),
                "order.updated",
                Some(&format!("key_{key}")),
                json!({"key": key, "seq": seq}),
            )
            .await;
        }
    }
    let settings = [
        ("DISPATCH_MAX_IN_FLIGHT", "8"),
        // Leases of 1 s + 1 s: the killed worker's expire soon after the kill.
        ("DISPATCH_REQUEST_TIMEOUT_MS", "1000"),
        ("DISPATCH_LEASE_MARGIN_MS", "1000"),
        ("DISPATCH_RETRY_INITIAL_DELAY_MS", "20"),
        ("DISPATCH_RETRY_MAX_DELAY_SECS", "1"),
        ("DISPATCH_RETRY_MAX_ATTEMPTS", "100"),
        // A quarter of the answers fail: the circuit must not open (and hold everything for
        // 30 s), as it would for a destination failing this often in production.
        ("DISPATCH_BREAKER_FAILURE_PERCENT", "100"),
        ("DISPATCH_BREAKER_MIN_REQUESTS", "1000000"),
    ];
    let mut workers: Vec<Child> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| spawn_worker(&h, id, &settings))
        .collect();
    h.receiver.wait_for("/hook", 40, PATIENCE).await;
    workers[0].kill().await.expect("SIGKILL");
    let total = i64::try_from(KEYS * PER_KEY).expect("a small number");
    eventually("every delivery is recorded", PATIENCE * 2, || async {
        h.count_in("delivered").await == total
    })
    .await;
    for w in &mut workers[1..] {
        assert!(sigterm(w).await.success());
    }

    let mut arrivals: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for req in h.receiver.requests("/hook") {
        let body: Value = serde_json::from_slice(&req.body).expect("a JSON body");
        let key = body["data"]["key"].as_u64().expect("a key");
        let seq = body["data"]["seq"].as_u64().expect("a seq");
        arrivals.entry(key).or_default().push(seq);
    }
    assert_eq!(arrivals.len(), KEYS);
    let mut repeats = 0;
    for (key, seqs) in &arrivals {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "key {key} arrived out of order: {seqs:?}"
        );
        let mut distinct = seqs.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            (0..PER_KEY as u64).collect::<Vec<_>>(),
            "key {key}: every event, in order"
        );
        repeats += seqs.len() - distinct.len();
    }
    assert!(
        repeats > 0,
        "some 500s were retried (the test exercised failing heads)"
    );
}
