//! The connection pool's bounds: a caller waits a bounded time for a connection when every one
//! is busy (then the database counts as unavailable, which the API answers 503), and a
//! connection left half-way through a step is closed rather than handed out again.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use diesel_async::RunQueryDsl;
use dispatch_store::pool::{self, DatabaseSettings, build_pool};
use dispatch_test_support::TestDb;

fn one_connection(db: &TestDb) -> DatabaseSettings {
    DatabaseSettings {
        max_connections: 1,
        connect_timeout: Duration::from_millis(300),
        ..db.settings()
    }
}

async fn backend_pid(conn: &mut diesel_async::AsyncPgConnection) -> i32 {
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .await
        .unwrap()
        .pid
}

#[tokio::test]
async fn a_caller_waits_a_bounded_time_for_a_busy_pool_and_is_told_unavailable() {
    let db = TestDb::new().await;
    let pool = build_pool(&one_connection(&db));
    let held = pool::connection(&pool).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(30), pool::connection(&pool))
        .await
        .expect("the wait for a connection is bounded");
    let error = waited.map(|_| ()).expect_err("every connection is busy");
    assert!(error.is_unavailable(), "{error:?}");
    drop(held);
    pool::connection(&pool)
        .await
        .expect("a connection once one is free");
}

#[tokio::test]
async fn an_unfinished_checkout_is_closed_and_a_finished_one_is_reused() {
    let db = TestDb::new().await;
    let pool = build_pool(&one_connection(&db));
    let mut conn = pool::checkout(&pool).await.unwrap();
    let first = backend_pid(&mut conn).await;
    conn.finish();
    let mut conn = pool::checkout(&pool).await.unwrap();
    assert_eq!(backend_pid(&mut conn).await, first, "finished: reused");
    drop(conn);
    let mut conn = pool::checkout(&pool).await.unwrap();
    let next = backend_pid(&mut conn).await;
    assert_ne!(next, first, "dropped unfinished: a new session");
    conn.finish();
}
