//! Group ingestion (the API's group commit), synchronous-commit modes and prepared statements.

use super::*;

#[tokio::test]
async fn a_group_stores_each_event_with_its_delivery_rows_and_judges_repeats_in_order() {
    use dispatch_store::queries::events::Ingested;
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "sub_orders", &["order.*"]).await;
    add_sub(&mut conn, "sub_all", &["*"]).await;
    ingest_created(
        &mut conn,
        &new_event("evt_old", "order.created", json!({"n": 0})),
    )
    .await;

    let group = [
        new_event("evt_b", "order.created", json!({"n": 1})),
        new_event("evt_old", "order.created", json!({"n": 0})),
        new_event("evt_a", "user.created", json!({"n": 2})),
        // The same id twice in one group: the first item counts.
        new_event("evt_b", "order.created", json!({"n": 1})),
        new_event("evt_b", "order.created", json!({"n": 99})),
        new_event("evt_old", "order.created", json!({"n": "changed"})),
    ];
    let outcomes = events::ingest_group(&mut conn, &group).await.unwrap();
    assert_eq!(outcomes.len(), group.len());

    let Ingested::Created { event, deliveries } = &outcomes[0] else {
        panic!("evt_b is new: {:?}", outcomes[0]);
    };
    assert_eq!(event.id, "evt_b");
    assert_eq!(event.data, json!({"n": 1}));
    // The rows answered are the rows stored, in creation order.
    assert_eq!(deliveries, &deliveries_of(&mut conn, "evt_b").await);
    assert_eq!(
        subscription_ids(deliveries),
        set(&["sub_orders", "sub_all"])
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d.status == "pending" && d.attempts == 0)
    );

    assert!(matches!(&outcomes[1], Ingested::Duplicate(e) if e.id == "evt_old"));
    let Ingested::Created { deliveries, .. } = &outcomes[2] else {
        panic!("evt_a is new: {:?}", outcomes[2]);
    };
    assert_eq!(subscription_ids(deliveries), set(&["sub_all"]));
    assert!(matches!(&outcomes[3], Ingested::Duplicate(e) if e.id == "evt_b"));
    assert!(matches!(&outcomes[4], Ingested::Conflict(e) if e.data == json!({"n": 1})));
    assert!(matches!(&outcomes[5], Ingested::Conflict(e) if e.data == json!({"n": 0})));
    // Nothing but the two new events' deliveries was created.
    assert_eq!(delivery_count(&mut conn).await, 2 + 3);
}

#[tokio::test]
async fn a_group_of_events_matching_nothing_is_stored_without_deliveries() {
    use dispatch_store::queries::events::Ingested;
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    let group: Vec<NewEvent> = (0..50)
        .map(|n| new_event(&format!("evt_{n:02}"), "order.created", json!({"n": n})))
        .collect();
    let outcomes = events::ingest_group(&mut conn, &group).await.unwrap();
    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ingested::Created { event, deliveries } => {
                assert_eq!(
                    event.id,
                    format!("evt_{n:02}"),
                    "answers stay in input order"
                );
                assert!(deliveries.is_empty());
            }
            other => panic!("{n}: {other:?}"),
        }
    }
    assert_eq!(delivery_count(&mut conn).await, 0);
}

#[tokio::test]
async fn a_relaxed_pool_commits_without_waiting_for_the_wal_and_a_durable_one_waits() {
    use dispatch_store::pool::{Durability, build_pool_with};
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        synchronous_commit: String,
    }
    let db = TestDb::new().await;
    for (durability, expected) in [(Durability::Relaxed, "off"), (Durability::Durable, "on")] {
        let pool = build_pool_with(&db.settings(), durability);
        let mut conn = connection(&pool).await.unwrap();
        let row: Setting = diesel::sql_query("SHOW synchronous_commit")
            .get_result(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.synchronous_commit, expected, "{durability:?}");
    }
    assert_eq!("OFF".parse::<Durability>(), Ok(Durability::Relaxed));
    assert_eq!("on".parse::<Durability>(), Ok(Durability::Durable));
    let err = "sometimes".parse::<Durability>().unwrap_err();
    assert!(
        err.contains("on or off") && err.contains("sometimes"),
        "{err}"
    );
}

#[tokio::test]
async fn hot_statements_are_prepared_once_per_connection() {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    async fn prepared_ingests(conn: &mut AsyncPgConnection) -> i64 {
        diesel::sql_query(
            "SELECT count(*) AS n FROM pg_prepared_statements
              WHERE statement LIKE '%INSERT INTO events%'
                AND statement NOT LIKE '%pg_prepared_statements%'",
        )
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
    }
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut conn = connection(&pool).await.unwrap();
    add_sub(&mut conn, "sub_all", &["*"]).await;
    for n in 0..5 {
        ingest_created(
            &mut conn,
            &new_event(&format!("evt_{n}"), "a.b", json!({"n": n})),
        )
        .await;
    }
    // Five ingestions, one prepared statement: each later execution is a single round trip.
    assert_eq!(prepared_ingests(&mut conn).await, 1);
}
