//! Subscription secrets at rest, read straight from the table: sealed on insert (never the
//! plaintext), bound to their subscription, rotated with an overlap window, re-sealed under the
//! active key (legacy plaintext rows included), and the migration's guarded revert.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::Text;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use dispatch_domain::sealing::{Keyring, SealError};
use dispatch_domain::{DestinationUrl, EventId, EventType, Pattern, Source, SubscriptionId};
use dispatch_store::AsyncPgConnection;
use dispatch_store::models::{NewEvent, NewSubscription, RateLimit};
use dispatch_store::pool::connection;
use dispatch_store::queries::{deliveries, events, subscriptions};
use dispatch_test_support::TestDb;
use dispatch_test_support::secrets::{TEST_SECRET_KEYS, test_keyring};

mod reseal;
mod rotation;

/// The stored secret columns of one subscription.
type Stored = subscriptions::StoredSecretColumns;

async fn stored(conn: &mut AsyncPgConnection, id: &str) -> Stored {
    subscriptions::stored_secret_columns(conn, id)
        .await
        .unwrap()
        .unwrap()
}

/// Every text column of the table, as the database holds it, for a "the plaintext is nowhere"
/// check.
async fn whole_table_text(conn: &mut AsyncPgConnection) -> String {
    subscriptions::table_text(conn).await.unwrap()
}

fn new_sub(id: &str, secret: Option<&str>) -> NewSubscription {
    NewSubscription {
        tenant: dispatch_domain::TenantId::default_tenant(),
        id: SubscriptionId::parse(id).unwrap(),
        url: DestinationUrl::parse(&format!("https://example.com/hooks/{id}")).unwrap(),
        event_types: vec![Pattern::parse("*").unwrap()],
        secret: secret.map(str::to_owned),
        rate_limit: RateLimit::default(),
        settings: Default::default(),
        enabled: true,
    }
}

async fn add(conn: &mut AsyncPgConnection, keyring: &Keyring, id: &str, secret: Option<&str>) {
    subscriptions::insert(conn, &new_sub(id, secret), keyring)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} should be new"));
}

/// A subscription as the previous release stored it: the secret in plaintext.
async fn add_legacy(conn: &mut AsyncPgConnection, id: &str, secret: &str) {
    diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types, secret)
         VALUES ($1, 'https://example.com/legacy', '{*}', $2)",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(secret)
    .execute(conn)
    .await
    .unwrap();
}

/// Only the `test-old` key of the test keyring, active.
fn old_keyring() -> Keyring {
    let old = TEST_SECRET_KEYS
        .split(',')
        .find(|e| e.trim().starts_with("test-old:"))
        .unwrap();
    Keyring::parse(old).unwrap()
}

fn close_to(at: DateTime<Utc>, expected: DateTime<Utc>) -> bool {
    (at - expected).num_seconds().abs() <= 5
}
