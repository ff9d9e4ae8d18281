//! The connection pool's bound: a caller waits a bounded time for a connection when every one
//! is busy (then the database counts as unavailable, which the API answers 503).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dispatch_store::pool::{self, DatabaseSettings, build_pool};
use dispatch_test_support::TestDb;

fn one_connection(db: &TestDb) -> DatabaseSettings {
    DatabaseSettings {
        max_connections: 1,
        connect_timeout: Duration::from_millis(300),
        ..db.settings()
    }
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
