//! Real `dispatch-worker` processes on one database, the fast cousins of `cargo xtask chaos`:
//! three processes deliver a backlog exactly once, a process killed with SIGKILL mid-delivery
//! is finished by another once its leases expire (first, ahead of an older backlog), and
//! SIGTERM under load drains without sending anything twice.

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use dispatch_test_support::receiver::Reply;
use serde_json::json;
use tokio::process::{Child, Command};

use crate::helpers::{Harness, PATIENCE, eventually};

/// A key in the format `DISPATCH_SECRET_KEYS` takes; the subscriptions here have no secret, so
/// it never opens anything.
const SECRET_KEYS: &str = "k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// A worker process named `id` on the harness's database, polling every 100 ms, with
/// `overrides` on top.
pub(crate) fn spawn_worker(h: &Harness, id: &str, overrides: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dispatch-worker"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", h.db.url())
        .env("ADDR", "127.0.0.1:0")
        .env("DISPATCH_WORKER_ID", id)
        .env("DISPATCH_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8")
        .env("DISPATCH_SECRET_KEYS", SECRET_KEYS)
        .env("DISPATCH_DB_MAX_CONNECTIONS", "4")
        .env("DISPATCH_POLL_INTERVAL_MS", "100")
        .envs(overrides.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

pub(crate) async fn sigterm(child: &mut Child) -> ExitStatus {
    let pid = child.id().unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("the worker exits after SIGTERM")
        .unwrap()
}

async fn ingest_many(h: &Harness, events: usize) {
    for n in 0..events {
        h.ingest(&format!("evt_{n}"), "order.created", json!({"n": n}))
            .await;
    }
}

/// How many requests the receiver got per (event id, path).
fn requests_per_delivery(h: &Harness) -> HashMap<(String, String), usize> {
    let mut out: HashMap<(String, String), usize> = HashMap::new();
    for req in h.receiver.all_requests() {
        let id = req.header("webhook-id").unwrap().to_owned();
        *out.entry((id, req.path.clone())).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_deliver_a_backlog_exactly_once() {
    let h = Harness::new().await;
    let paths = ["/a", "/b", "/c"];
    for (i, path) in paths.iter().enumerate() {
        h.receiver
            .set_default(path, Reply::ok().delay(Duration::from_millis(5)));
        h.subscribe(&format!("sub_{i}"), path, None).await;
    }
    let events = 40;
    ingest_many(&h, events).await;
    let total = events * paths.len();

    let mut workers: Vec<Child> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| spawn_worker(&h, id, &[("DISPATCH_MAX_IN_FLIGHT", "8")]))
        .collect();
    eventually("every delivery is recorded", PATIENCE, || async {
        h.count_in("delivered").await == i64::try_from(total).unwrap()
    })
    .await;
    for w in &mut workers {
        assert!(sigterm(w).await.success());
    }

    let per_delivery = requests_per_delivery(&h);
    assert_eq!(
        per_delivery.len(),
        total,
        "every (event, destination) was sent"
    );
    let repeated: Vec<_> = per_delivery.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "sent more than once: {repeated:?}");
    assert_eq!(h.attempt_count().await, i64::try_from(total).unwrap());
    assert!(h.all_deliveries().await.iter().all(|d| d.attempts == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_killed_mid_delivery_is_finished_by_another_once_its_leases_expire() {
    let h = Harness::new().await;
    // The first two requests are held by the receiver: they are in flight, for certain, when
    // the first worker is killed (a new destination starts at two requests in flight).
    h.receiver
        .script("/hook", (0..2).map(|_| Reply::ok().held()));
    h.subscribe("sub_1", "/hook", None).await;
    let events = 20;
    ingest_many(&h, events).await;
    // A lease of 1 s + 1 s: expired soon after the kill.
    let short_lease = [
        ("DISPATCH_REQUEST_TIMEOUT_MS", "1000"),
        ("DISPATCH_LEASE_MARGIN_MS", "1000"),
        ("DISPATCH_MAX_IN_FLIGHT", "4"),
    ];

    let mut doomed = spawn_worker(&h, "doomed", &short_lease);
    h.receiver.wait_for("/hook", 2, PATIENCE).await;
    doomed.kill().await.unwrap();
    let held: Vec<String> = h
        .receiver
        .requests("/hook")
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(held.len(), 2);
    // Its two claims stay leased to it: nobody released them.
    assert_eq!(h.count_in("processing").await, 2);
    // The held requests now answer 200 to a connection nobody reads: the receiver got them,
    // the database never heard of it.
    h.receiver.release(2);

    let mut heir = spawn_worker(&h, "heir", &short_lease);
    eventually("every delivery is recorded", PATIENCE, || async {
        h.count_in("delivered").await == i64::try_from(events).unwrap()
    })
    .await;
    assert!(sigterm(&mut heir).await.success());

    let per_delivery = requests_per_delivery(&h);
    assert_eq!(
        per_delivery.len(),
        events,
        "every event reached the receiver"
    );
    let twice: Vec<&String> = per_delivery
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((id, _), _)| id)
        .collect();
    // At-least-once: exactly the two in flight at the kill were sent again, nothing else.
    let mut twice_sorted: Vec<&str> = twice.iter().map(|s| s.as_str()).collect();
    twice_sorted.sort_unstable();
    let mut held_sorted: Vec<&str> = held.iter().map(String::as_str).collect();
    held_sorted.sort_unstable();
    assert_eq!(twice_sorted, held_sorted);
    assert!(per_delivery.values().all(|&n| n <= 2));
    assert_eq!(h.receiver.total(), events + 2);
    // The dead worker's claims were not attempts: one recorded attempt per delivery.
    assert_eq!(h.attempt_count().await, i64::try_from(events).unwrap());
    assert!(h.all_deliveries().await.iter().all(|d| d.attempts == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_in_flight_deliveries_and_nothing_is_sent_twice() {
    let h = Harness::new().await;
    h.receiver
        .set_default("/slow", Reply::ok().delay(Duration::from_millis(200)));
    h.subscribe("sub_1", "/slow", None).await;
    let events = 30;
    ingest_many(&h, events).await;

    let mut first = spawn_worker(
        &h,
        "first",
        &[
            ("DISPATCH_MAX_IN_FLIGHT", "4"),
            ("DISPATCH_SHUTDOWN_GRACE_SECS", "20"),
        ],
    );
    h.receiver.wait_for("/slow", 1, PATIENCE).await;
    assert!(sigterm(&mut first).await.success(), "a drained exit is 0");
    // Whatever the first worker started, it finished and recorded: nothing is left leased.
    assert_eq!(h.count_in("processing").await, 0);
    let delivered_by_first = h.count_in("delivered").await;
    assert!(delivered_by_first >= 1);
    assert_eq!(
        i64::try_from(h.receiver.total()).unwrap(),
        delivered_by_first,
        "every request the first worker sent was recorded as delivered"
    );

    let mut second = spawn_worker(&h, "second", &[("DISPATCH_MAX_IN_FLIGHT", "8")]);
    eventually("the rest is delivered", PATIENCE, || async {
        h.count_in("delivered").await == i64::try_from(events).unwrap()
    })
    .await;
    assert!(sigterm(&mut second).await.success());

    let per_delivery = requests_per_delivery(&h);
    assert_eq!(per_delivery.len(), events);
    assert!(
        per_delivery.values().all(|&n| n == 1),
        "sent twice: {per_delivery:?}"
    );
    assert_eq!(h.attempt_count().await, i64::try_from(events).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_deliveries_go_ahead_of_an_older_backlog_once_their_leases_expire() {
    let h = Harness::new().await;
    // The first two requests are held: in flight, for certain, when the worker is killed. Every
    // later answer takes 10 ms, so one request at a time drains 400 in 4 s at the very least.
    h.receiver
        .script("/hook", (0..2).map(|_| Reply::ok().held()));
    h.receiver
        .set_default("/hook", Reply::ok().delay(Duration::from_millis(10)));
    // No rate limit in the way: a deferred delivery would lose its place in the queue.
    h.subscribe_unlimited("sub_1", "/hook").await;
    ingest_many(&h, 2).await;
    // A lease of 1 s + 1 s: expired soon after the kill.
    let short_lease = [
        ("DISPATCH_REQUEST_TIMEOUT_MS", "1000"),
        ("DISPATCH_LEASE_MARGIN_MS", "1000"),
    ];
    let mut doomed = spawn_worker(&h, "doomed", &short_lease);
    h.receiver.wait_for("/hook", 2, PATIENCE).await;
    doomed.kill().await.unwrap();
    h.receiver.release(2);
    let held: Vec<String> = h
        .receiver
        .requests("/hook")
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();

    // A backlog of 400, all due for ten minutes: older than anything the dead worker held.
    h.execute(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data)
             SELECT 'old_' || i, 'order.created', 'test', '{}' FROM generate_series(1, 400) i
             RETURNING id
         )
         INSERT INTO deliveries (event_id, subscription_id, next_attempt_at)
         SELECT id, 'sub_1', now() - interval '10 minutes' FROM ev",
    )
    .await;
    let one_at_a_time = [
        short_lease[0],
        short_lease[1],
        ("DISPATCH_MAX_IN_FLIGHT", "1"),
        ("DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION", "1"),
    ];
    let mut heir = spawn_worker(&h, "heir", &one_at_a_time);
    eventually("everything is delivered", PATIENCE * 2, || async {
        h.count_in("delivered").await == 402
    })
    .await;
    assert!(sigterm(&mut heir).await.success());

    // Where the re-sent ones came among the heir's requests: ahead of most of the backlog,
    // not after all of it.
    let order: Vec<String> = h
        .receiver
        .requests("/hook")
        .iter()
        .skip(2)
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(order.len(), 402, "each sent once more, nothing else twice");
    for id in &held {
        let at = order.iter().position(|o| o == id).expect("re-sent");
        assert!(
            at < 300,
            "a dead worker's delivery was re-sent as request {at} of 402, behind the backlog"
        );
    }
}
