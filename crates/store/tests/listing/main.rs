//! Operators' lists, retries and replays against a real PostgreSQL: every list statement is
//! served by an index for every filter combination the API can issue, the SQL summary of an
//! event's status agrees with the domain's, `failed_deliveries` follows every status change,
//! and a replay of 100 000 deliveries runs in bounded batches.

#![allow(clippy::unwrap_used)]

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use dispatch_domain::DeliveryStatus;
use dispatch_store::AsyncPgConnection;
use dispatch_store::pool::connection;
use dispatch_store::queries::listing::{self, DeliveryFilter, EventFilter};
use dispatch_store::queries::replays::{self, Created, NewReplay};
use dispatch_store::queries::requeue::{self, Retried, RetryRefusal};
use dispatch_test_support::TestDb;

mod replay;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

async fn exec(conn: &mut AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.unwrap();
}

/// Two subscriptions and `n` events, one delivery each: every tenth failed, the rest
/// delivered; even events are `order.created` to `sub_a`, odd ones `invoice.paid` to `sub_b`.
async fn seed(conn: &mut AsyncPgConnection, n: i64) {
    exec(
        conn,
        "INSERT INTO subscriptions (id, url, event_types)
         VALUES ('sub_a', 'https://example.com/a', '{*}'),
                ('sub_b', 'https://example.com/b', '{*}')",
    )
    .await;
    diesel::sql_query(
        "INSERT INTO events (id, event_type, source, data, received_at)
         SELECT 'e_' || i, CASE WHEN i % 2 = 0 THEN 'order.created' ELSE 'invoice.paid' END,
                'billing', '{}'::jsonb, now() - make_interval(secs => i)
           FROM generate_series(1, $1) i",
    )
    .bind::<BigInt, _>(n)
    .execute(conn)
    .await
    .unwrap();
    diesel::sql_query(
        "INSERT INTO deliveries (event_id, subscription_id, status, attempts)
         SELECT 'e_' || i, CASE WHEN i % 2 = 0 THEN 'sub_a' ELSE 'sub_b' END,
                CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'delivered' END, 1
           FROM generate_series(1, $1) i",
    )
    .bind::<BigInt, _>(n)
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn every_list_filter_combination_is_served_by_an_index() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    seed(&mut conn, 2_000).await;
    exec(&mut conn, "ANALYZE").await;
    // A sequential scan then appears only where no index can serve the statement.
    exec(&mut conn, "SET enable_seqscan = off").await;
    let big = [
        "Seq Scan on events",
        "Seq Scan on deliveries",
        "Seq Scan on attempts",
    ];
    let t = chrono::Utc::now();
    let windows = [
        (None, None),
        (Some(t), None),
        (None, Some(t)),
        (Some(t), Some(t)),
    ];
    let mut statuses: Vec<Option<DeliveryStatus>> = vec![None];
    statuses.extend(DeliveryStatus::ALL.map(Some));
    let mut checked = 0;
    for (type_exact, type_prefix) in [
        (None, None),
        (Some("order.created"), None),
        (None, Some("order.")),
    ] {
        for source in [None, Some("billing")] {
            for status in &statuses {
                for subscription in [None, Some("sub_a")] {
                    for (after, before) in windows {
                        for cursor in [false, true] {
                            let filter = EventFilter {
                                type_exact: type_exact.map(str::to_owned),
                                type_prefix: type_prefix.map(str::to_owned),
                                source: source.map(str::to_owned),
                                status: *status,
                                subscription_id: subscription.map(str::to_owned),
                                received_after: after,
                                received_before: before,
                            };
                            let plans = listing::plans(
                                &mut conn,
                                &filter,
                                &DeliveryFilter::default(),
                                cursor,
                            )
                            .await
                            .unwrap();
                            for scan in big {
                                assert!(!plans[0].contains(scan), "{filter:?}:\n{}", plans[0]);
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    use DeliveryStatus::*;
    let mut sets: Vec<Vec<DeliveryStatus>> = vec![vec![]];
    sets.extend(DeliveryStatus::ALL.map(|s| vec![s]));
    sets.extend([
        vec![Pending, Retrying],
        vec![Retrying, Failed],
        vec![Delivered, Failed],
    ]);
    for set in &sets {
        for subscription in [None, Some("sub_a")] {
            for event in [None, Some("e_10")] {
                for (after, before) in windows {
                    for cursor in [false, true] {
                        let filter = DeliveryFilter {
                            statuses: set.clone(),
                            subscription_id: subscription.map(str::to_owned),
                            event_id: event.map(str::to_owned),
                            updated_after: after,
                            updated_before: before,
                        };
                        let plans =
                            listing::plans(&mut conn, &EventFilter::default(), &filter, cursor)
                                .await
                                .unwrap();
                        for scan in big {
                            assert!(!plans[1].contains(scan), "{filter:?}:\n{}", plans[1]);
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * 7 * 2 * 4 * 2 + 10 * 2 * 2 * 4 * 2);
}

#[derive(QueryableByName)]
struct Summary {
    #[diesel(sql_type = Text)]
    status: String,
}

#[tokio::test]
async fn the_sql_event_status_agrees_with_the_domain_for_every_mix_of_delivery_statuses() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    exec(
        &mut conn,
        "INSERT INTO subscriptions (id, url, event_types)
         SELECT 's' || i, 'https://example.com/' || i, '{*}' FROM generate_series(0, 5) i",
    )
    .await;
    let all = DeliveryStatus::ALL;
    // Every subset of the six statuses, the empty one included (an event matching nothing).
    for mask in 0u32..64 {
        let chosen: Vec<DeliveryStatus> = (0..6)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| all[i])
            .collect();
        let id = format!("e_{mask}");
        diesel::sql_query(
            "INSERT INTO events (id, event_type, source, data) VALUES ($1, 't', 's', '{}')",
        )
        .bind::<Text, _>(&id)
        .execute(&mut conn)
        .await
        .unwrap();
        for (i, status) in chosen.iter().enumerate() {
            let leased = if *status == DeliveryStatus::Processing {
                "now()"
            } else {
                "NULL"
            };
            diesel::sql_query(format!(
                "INSERT INTO deliveries (event_id, subscription_id, status, leased_until)
                 VALUES ($1, 's{i}', $2, {leased})"
            ))
            .bind::<Text, _>(&id)
            .bind::<Text, _>(status.as_str())
            .execute(&mut conn)
            .await
            .unwrap();
        }
        let sql: Summary = diesel::sql_query(format!(
            "SELECT {} AS status FROM events e WHERE e.id = $1",
            listing::EVENT_STATUS_SQL
        ))
        .bind::<Text, _>(&id)
        .get_result(&mut conn)
        .await
        .unwrap();
        let domain = dispatch_domain::summarise_event_status(chosen.iter().copied());
        assert_eq!(sql.status, domain.as_str(), "{chosen:?}");
    }
}

/// The newest delivery in `status`.
async fn first_id(conn: &mut AsyncPgConnection, status: DeliveryStatus) -> i64 {
    let filter = DeliveryFilter {
        statuses: vec![status],
        ..DeliveryFilter::default()
    };
    listing::deliveries(
        conn,
        &dispatch_domain::TenantId::default_tenant(),
        &filter,
        None,
        1,
    )
    .await
    .unwrap()[0]
        .id
}

#[tokio::test]
async fn failed_deliveries_follow_every_status_change_and_retries_requeue_one() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    seed(&mut conn, 100).await;
    let failed = "SELECT count(*) AS n FROM failed_deliveries";
    assert_eq!(count(&mut conn, failed).await, 10, "inserted as failed");

    // A failed one retried: pending, due now, a fresh schedule; no longer listed as failed.
    let id = first_id(&mut conn, DeliveryStatus::Failed).await;
    let retried = requeue::retry(
        &mut conn,
        &dispatch_domain::TenantId::default_tenant(),
        id,
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        retried,
        Retried::Requeued {
            from: DeliveryStatus::Failed
        }
    );
    let item = listing::delivery(&mut conn, &dispatch_domain::TenantId::default_tenant(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((item.status.as_str(), item.attempts), ("pending", 0));
    assert_eq!(count(&mut conn, failed).await, 9);
    assert_eq!(
        count(&mut conn, "SELECT count(*) AS n FROM delivery_queue").await,
        1
    );
    // Pending now: a second retry is refused, and so is a delivered one without resend.
    assert_eq!(
        requeue::retry(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            id,
            false
        )
        .await
        .unwrap(),
        Retried::Refused(RetryRefusal::AlreadyQueued)
    );
    let delivered = first_id(&mut conn, DeliveryStatus::Delivered).await;
    assert_eq!(
        requeue::retry(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            delivered,
            false
        )
        .await
        .unwrap(),
        Retried::Refused(RetryRefusal::Delivered)
    );
    assert_eq!(
        requeue::retry(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            delivered,
            true
        )
        .await
        .unwrap(),
        Retried::Requeued {
            from: DeliveryStatus::Delivered
        }
    );
    assert_eq!(
        requeue::retry(
            &mut conn,
            &dispatch_domain::TenantId::default_tenant(),
            1 << 40,
            false
        )
        .await
        .unwrap(),
        Retried::NotFound
    );

    // Failing again puts it back; deleting the history removes it.
    exec(
        &mut conn,
        &format!("UPDATE deliveries SET status = 'failed' WHERE id = {id}"),
    )
    .await;
    assert_eq!(count(&mut conn, failed).await, 10);
    exec(
        &mut conn,
        "DELETE FROM events WHERE id IN (SELECT event_id FROM failed_deliveries)",
    )
    .await;
    assert_eq!(count(&mut conn, failed).await, 0);
}
