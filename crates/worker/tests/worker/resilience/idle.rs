//! Idle destinations and workers: unused stacks dropped (unless in flight), no spinning when blocked.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_unused_for_the_idle_time_are_dropped_unless_a_request_is_in_flight() {
    let h = Harness::new().await;
    h.subscribe("sub_quick", "/quick", None).await;
    h.subscribe("sub_held", "/held", None).await;
    h.receiver.script("/held", [Reply::ok().held()]);
    h.ingest("evt_1", "order.created", json!({})).await;
    let worker = h.worker(&[("DISPATCH_DESTINATION_IDLE_SECS", "1")]);

    let step = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run_once().await }
    });
    h.receiver.wait_for("/quick", 1, PATIENCE).await;
    h.receiver.wait_for("/held", 1, PATIENCE).await;
    assert_eq!(worker.destinations().len(), 2);

    // Both were last used before their requests arrived; after more than the idle time, the
    // quick one goes, the one with its request still in flight stays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(worker.destinations().evict_idle(), 1);
    assert_eq!(worker.destinations().len(), 1);

    h.receiver.release(1);
    assert_eq!(step.await.unwrap().unwrap(), 2);
    assert_eq!(h.count_in("delivered").await, 2);
    assert_eq!(worker.destinations().evict_idle(), 1, "idle and finished");
    assert!(worker.destinations().is_empty());

    // A destination used again gets a fresh stack.
    h.ingest("evt_2", "order.created", json!({})).await;
    assert_eq!(worker.run_once().await.unwrap(), 2);
    assert_eq!(worker.destinations().len(), 2);
    assert_eq!(h.count_in("delivered").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_rebuilt_while_a_request_is_in_flight_frees_the_slot_when_it_finishes() {
    let h = Harness::new().await;
    h.subscribe("sub_1", "/hook", None).await;
    h.receiver.script("/hook", [Reply::ok().held()]);
    h.ingest("evt_1", "order.created", json!({})).await;
    let a = h.worker(&[
        ("DISPATCH_WORKER_ID", "worker-a"),
        ("DISPATCH_MAX_IN_FLIGHT_PER_DESTINATION", "1"),
    ]);
    let b = h.worker(&[("DISPATCH_WORKER_ID", "worker-b")]);

    // evt_1 is in flight through the stack built for a fleet of one.
    let step = tokio::spawn({
        let a = a.clone();
        async move { a.run_once().await }
    });
    h.receiver.wait_for("/hook", 1, PATIENCE).await;

    // Meanwhile a second worker joins: the next use of the destination rebuilds its stack for a
    // fleet of two, while evt_1 still holds the destination's one slot.
    b.report_in().await.unwrap();
    assert_eq!(a.report_in().await.unwrap(), 2);
    h.ingest("evt_2", "order.created", json!({})).await;
    assert_eq!(
        a.run_once().await.unwrap(),
        0,
        "the destination has no room: evt_2 is not even claimed"
    );
    assert_eq!(
        h.delivery("evt_2", "sub_1").await.status,
        "pending",
        "the destination is busy: evt_2 waits its turn"
    );

    // evt_1 finishes: its slot is free again, so evt_2 goes.
    h.receiver.release(1);
    assert_eq!(step.await.unwrap().unwrap(), 1);
    assert_eq!(h.delivery("evt_1", "sub_1").await.status, "delivered");
    h.make_due().await;
    assert_eq!(a.run_once().await.unwrap(), 1);
    assert_eq!(
        h.delivery("evt_2", "sub_1").await.status,
        "delivered",
        "nothing is in flight, yet the destination still counts one request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_does_not_spin_while_an_open_circuit_holds_due_deliveries() {
    let h = Harness::new().await;
    h.subscribe("sub_down", "/down", None).await;
    h.ingest("evt_1", "order.created", json!({})).await;
    h.execute(
        "UPDATE subscriptions SET circuit_state = 'open',
                circuit_open_until = now() + interval '1 hour', circuit_changed_at = now()
          WHERE id = 'sub_down'",
    )
    .await;
    count_claims(&h).await;
    // Nothing else would wake it for an hour.
    let worker = h.worker(&[("DISPATCH_POLL_INTERVAL_MS", "3600000")]);
    let running = Running::start(&worker);
    eventually("the worker listens", PATIENCE, || async {
        worker.is_listening()
    })
    .await;

    // While it sits idle for a while (this only ever lowers the count on a slow machine), it
    // looks at the queue a handful of times, not in a loop.
    let before = claims(&h).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let looked = claims(&h).await - before;
    running.stop().await;
    assert!(
        looked <= 10,
        "{looked} claims in 2 s by a worker with nothing it may claim"
    );
    assert!(h.receiver.requests("/down").is_empty());
    assert_eq!(h.delivery("evt_1", "sub_down").await.status, "pending");
}

/// From now on, every statement that updates deliveries (a claim, even of nothing) is counted
/// (read with [`claims`]).
pub(crate) async fn count_claims(h: &Harness) {
    h.execute("CREATE TABLE test_claims (n bigint NOT NULL)")
        .await;
    h.execute("INSERT INTO test_claims VALUES (0)").await;
    h.execute(
        "CREATE FUNCTION test_count_claims() RETURNS trigger LANGUAGE plpgsql AS
         $$ BEGIN UPDATE test_claims SET n = n + 1; RETURN NULL; END $$",
    )
    .await;
    h.execute(
        "CREATE TRIGGER test_count_claims AFTER UPDATE ON deliveries
         FOR EACH STATEMENT EXECUTE FUNCTION test_count_claims()",
    )
    .await;
}

pub(crate) async fn claims(h: &Harness) -> i64 {
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;
    use diesel_async::RunQueryDsl;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let row: Count = diesel::sql_query("SELECT n FROM test_claims")
        .get_result(&mut h.conn().await)
        .await
        .unwrap();
    row.n
}
