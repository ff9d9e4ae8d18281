//! A property test of the claim rule: random interleavings of keyed ingestion, claims by three
//! workers, outcomes (delivered, retry now, retry later, failed for good), expired leases,
//! operator replays and skips, on `skip` and `block` subscriptions. After every step: no key
//! ever has two deliveries claimable or in flight; a delivery is claimed only when no earlier
//! delivery of its key that was never replayed is unfinished; every key with waiting work and no
//! blocking head has exactly one claimable delivery. At the end everything drains.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use dispatch_domain::DeliveryStatus;
use dispatch_store::AsyncPgConnection;
use dispatch_store::pool::connection;
use dispatch_store::queries::deliveries::ClaimedDelivery;
use dispatch_store::queries::{ordering, requeue};
use dispatch_test_support::TestDb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::helpers::*;

#[derive(Debug, Clone)]
enum Op {
    Ingest { key: u8 },
    Claim { worker: u8 },
    Finish { pick: usize, how: How },
    ExpireLeases,
    Replay { pick: usize },
    Skip { pick: usize },
}

#[derive(Debug, Clone, Copy)]
enum How {
    Delivered,
    RetryNow,
    RetryLater,
    Failed,
}

fn op() -> impl Strategy<Value = Op> {
    let how = prop_oneof![
        Just(How::Delivered),
        Just(How::RetryNow),
        Just(How::RetryLater),
        Just(How::Failed)
    ];
    prop_oneof![
        4 => (0u8..3).prop_map(|key| Op::Ingest { key }),
        4 => (0u8..3).prop_map(|worker| Op::Claim { worker }),
        4 => (any::<usize>(), how).prop_map(|(pick, how)| Op::Finish { pick, how }),
        1 => Just(Op::ExpireLeases),
        1 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Skip { pick }),
    ]
}

/// What the test remembers between steps.
#[derive(Default)]
struct Model {
    /// Claims not yet finished, with the worker holding each.
    in_flight: Vec<(String, ClaimedDelivery)>,
    /// Deliveries an operator put back in line.
    replayed: BTreeSet<i64>,
    events: usize,
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// The invariants that hold after every step.
async fn check(conn: &mut AsyncPgConnection, sub: &str, block: bool) -> Result<(), TestCaseError> {
    let all = rows(conn, sub).await;
    let mut by_key: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for row in &all {
        if let Some(key) = row.ordering_key.as_deref() {
            by_key.entry(key).or_default().push(row);
        }
    }
    for (key, line) in &by_key {
        let live: Vec<i64> = line
            .iter()
            .filter(|r| r.live || r.status == "processing")
            .map(|r| r.id)
            .collect();
        if live.len() > 1 {
            return Err(fail(format!(
                "key {key}: {live:?} claimable or in flight at once: {line:?}"
            )));
        }
        let waiting = line.iter().any(|r| r.queued);
        let blocking_head = block
            && ordering::blocked_keys(
                conn,
                &dispatch_domain::TenantId::default_tenant(),
                sub,
                None,
                100,
            )
            .await
            .map_err(|e| fail(e.to_string()))?
            .iter()
            .any(|k| k.ordering_key == *key && k.status == "failed");
        if waiting && !blocking_head && live.len() != 1 {
            return Err(fail(format!(
                "key {key} has waiting work and no blocking head but {} live: {line:?}",
                live.len()
            )));
        }
    }
    Ok(())
}

/// A claim is in order when no earlier delivery of its key, never replayed, is unfinished.
fn check_claim_order(
    claimed: &ClaimedDelivery,
    before: &[Row],
    model: &Model,
) -> Result<(), TestCaseError> {
    let Some(me) = before.iter().find(|r| r.id == claimed.id) else {
        return Ok(());
    };
    let Some(key) = me.ordering_key.as_deref() else {
        return Ok(());
    };
    let overtaken: Vec<i64> = before
        .iter()
        .filter(|r| r.ordering_key.as_deref() == Some(key) && r.id < me.id)
        .filter(|r| matches!(r.status.as_str(), "pending" | "retrying" | "processing"))
        .filter(|r| !model.replayed.contains(&r.id))
        .map(|r| r.id)
        .collect();
    if overtaken.is_empty() {
        Ok(())
    } else {
        Err(fail(format!(
            "delivery {} of key {key} claimed before earlier unfinished {overtaken:?}",
            me.id
        )))
    }
}

async fn step(
    conn: &mut AsyncPgConnection,
    sub: &str,
    model: &mut Model,
    op: &Op,
) -> Result<(), TestCaseError> {
    match op {
        Op::Ingest { key } => {
            model.events += 1;
            ingest(
                conn,
                &format!("{sub}_e{}", model.events),
                Some(&format!("k{key}")),
            )
            .await;
        }
        Op::Claim { worker } => {
            let before = rows(conn, sub).await;
            let worker = format!("w{worker}");
            for c in claim(conn, &worker).await {
                check_claim_order(&c, &before, model)?;
                model.in_flight.retain(|(_, held)| held.id != c.id);
                model.in_flight.push((worker.clone(), c));
            }
        }
        Op::Finish { pick, how } => {
            if model.in_flight.is_empty() {
                return Ok(());
            }
            let (worker, c) = model.in_flight.remove(pick % model.in_flight.len());
            let (status, wait) = match how {
                How::Delivered => (DeliveryStatus::Delivered, Duration::ZERO),
                How::RetryNow => (DeliveryStatus::Retrying, Duration::ZERO),
                How::RetryLater => (DeliveryStatus::Retrying, Duration::from_secs(3600)),
                How::Failed => (DeliveryStatus::Failed, Duration::ZERO),
            };
            // Fenced: an outcome under an expired (and re-claimed) lease is not applied.
            record(conn, &worker, &[outcome(&c, status, wait)]).await;
        }
        Op::ExpireLeases => {
            diesel::sql_query(
                "UPDATE deliveries SET leased_until = now() - interval '1 second'
                  WHERE subscription_id = $1 AND status = 'processing'",
            )
            .bind::<Text, _>(sub)
            .execute(conn)
            .await
            .map_err(|e| fail(e.to_string()))?;
        }
        Op::Replay { pick } => {
            let done: Vec<i64> = rows(conn, sub)
                .await
                .into_iter()
                .filter(|r| r.status == "failed")
                .map(|r| r.id)
                .collect();
            if !done.is_empty() {
                let id = done[pick % done.len()];
                requeue::retry(
                    conn,
                    &dispatch_domain::TenantId::default_tenant(),
                    id,
                    false,
                )
                .await
                .map_err(|e| fail(e.to_string()))?;
                model.replayed.insert(id);
            }
        }
        Op::Skip { pick } => {
            let all = rows(conn, sub).await;
            if !all.is_empty() {
                let id = all[pick % all.len()].id;
                ordering::skip(conn, &dispatch_domain::TenantId::default_tenant(), id)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// Delivers everything left (skipping blocked heads), then nothing of the subscription is
/// unfinished and no key is remembered.
async fn drain(conn: &mut AsyncPgConnection, sub: &str) -> Result<(), TestCaseError> {
    diesel::sql_query(
        "UPDATE deliveries
            SET leased_until = CASE WHEN status = 'processing'
                                    THEN now() - interval '1 second' END,
                next_attempt_at = least(next_attempt_at, now())
          WHERE subscription_id = $1 AND status IN ('processing', 'retrying')",
    )
    .bind::<Text, _>(sub)
    .execute(conn)
    .await
    .map_err(|e| fail(e.to_string()))?;
    for _ in 0..200 {
        for k in ordering::blocked_keys(
            conn,
            &dispatch_domain::TenantId::default_tenant(),
            sub,
            None,
            100,
        )
        .await
        .map_err(|e| fail(e.to_string()))?
        {
            ordering::skip(
                conn,
                &dispatch_domain::TenantId::default_tenant(),
                k.delivery_id,
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        }
        let claimed: Vec<ClaimedDelivery> = claim(conn, "drain")
            .await
            .into_iter()
            .filter(|c| c.subscription_id == sub)
            .collect();
        if claimed.is_empty() {
            break;
        }
        let outcomes: Vec<_> = claimed
            .iter()
            .map(|c| outcome(c, DeliveryStatus::Delivered, Duration::ZERO))
            .collect();
        record(conn, "drain", &outcomes).await;
    }
    let left: Vec<Row> = rows(conn, sub)
        .await
        .into_iter()
        .filter(|r| r.queued)
        .collect();
    if !left.is_empty() {
        return Err(fail(format!("did not drain: {left:?}")));
    }
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let keys: Count =
        diesel::sql_query("SELECT count(*) AS n FROM ordered_keys WHERE subscription_id = $1")
            .bind::<Text, _>(sub)
            .get_result(conn)
            .await
            .map_err(|e| fail(e.to_string()))?;
    if keys.n != 0 {
        return Err(fail(format!("{} keys remembered after draining", keys.n)));
    }
    Ok(())
}

#[test]
fn no_interleaving_puts_two_deliveries_of_a_key_in_flight_or_one_out_of_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The pool starts its timers on the runtime it is created in.
    let _entered = rt.enter();
    let db = rt.block_on(TestDb::new());
    let pool = db.pool();
    let case = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (proptest::collection::vec(op(), 1..60), any::<bool>());
    runner
        .run(&strategy, |(ops, block)| {
            rt.block_on(async {
                let mut conn = connection(&pool).await.unwrap();
                // Each case on its own subscription: earlier cases' rows never interfere.
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sub = format!("s{n}");
                subscribe(
                    &mut conn,
                    &sub,
                    "per_key",
                    if block { "block" } else { "skip" },
                )
                .await;
                let mut model = Model::default();
                for op in &ops {
                    step(&mut conn, &sub, &mut model, op).await?;
                    check(&mut conn, &sub, block).await?;
                }
                drain(&mut conn, &sub).await
            })
        })
        .unwrap();
}
