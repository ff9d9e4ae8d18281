//! Changing a subscription (`PATCH /subscriptions/{id}`): its URL, patterns, rate limit and
//! settings in one short transaction, and pausing and resuming it. A paused subscription's
//! unfinished deliveries are *held*: due at 'infinity' in `delivery_queue`, past the end of every
//! claim's range, until it is resumed, which hands them back at their own times (oldest first).
//! Resuming a subscription that Dispatch disabled (auto-disable) clears the reason and its
//! failing spell.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use dispatch_domain::{OnExhausted, Ordering};

use crate::StoreError;
use crate::models::{RateLimit, SubscriptionRow, SubscriptionSettings};
use crate::schema::subscriptions;

/// Every field a change of a subscription sets, all at once (the API merges a patch into what
/// [`SubscriptionChange::of`] read, validates the result, and writes it whole).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionChange {
    /// Normalised destination URL (already checked against the destination policy).
    pub url: String,
    pub event_types: Vec<String>,
    pub rate_limit: RateLimit,
    pub settings: SubscriptionSettings,
    /// `false`: paused.
    pub enabled: bool,
}

fn strings(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

impl SubscriptionChange {
    /// What `row` holds of the fields a change sets.
    pub fn of(row: &SubscriptionRow) -> Self {
        Self {
            url: row.url.clone(),
            event_types: row.event_types.clone(),
            rate_limit: RateLimit {
                per_second: row.rate_limit_per_sec,
                burst: row.rate_limit_burst,
            },
            settings: SubscriptionSettings {
                description: row.description.clone(),
                metadata: strings(&row.metadata),
                headers: strings(&row.headers),
                max_attempts: row.max_attempts,
                max_delay_secs: row.max_delay_secs,
                timeout_ms: row.timeout_ms,
                filter: row.filter.clone(),
                auto_disable_after_secs: row.auto_disable_after_secs,
                // The CHECK constraints admit only these names; anything else reads as the
                // default, which a change then writes back.
                ordering: row.ordering.parse().unwrap_or_default(),
                on_exhausted: row.on_exhausted.parse().unwrap_or_default(),
            },
            enabled: row.enabled,
        }
    }
}

/// What [`update`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// Written; `held` deliveries were held (it was paused) or `released` (it was resumed).
    Updated {
        row: Box<SubscriptionRow>,
        held: usize,
        released: usize,
    },
    /// The subscription changed since `expected` was read: nothing written (read, merge and try
    /// again).
    Stale,
    /// No active subscription has this id.
    NotFound,
}

/// Writes `change` to subscription `id` if what it holds is still `expected`, in one
/// transaction. Pausing (`enabled` true → false) holds its unfinished deliveries; resuming
/// releases every held one. Changes apply to every delivery not yet claimed: the claim reads the
/// subscription's URL and settings when it hands a delivery out.
///
/// The row is locked `FOR UPDATE`, which conflicts with the key-share lock ingestion takes on
/// the subscriptions it fans out to: an ingestion in flight is waited for (and its deliveries are
/// then held or released here), and one that starts meanwhile waits and then reads the new
/// `enabled`. So no delivery created around a pause escapes it.
pub async fn update(
    conn: &mut AsyncPgConnection,
    tenant: &dispatch_domain::TenantId,
    id: &str,
    expected: &SubscriptionChange,
    change: &SubscriptionChange,
) -> Result<UpdateOutcome, StoreError> {
    let (id, expected, change) = (tenant.stored_id(id), expected.clone(), change.clone());
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let current = subscriptions::table
            .filter(subscriptions::id.eq(&id))
            .filter(subscriptions::deleted_at.is_null())
            .select(SubscriptionRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?;
        let Some(current) = current else {
            return Ok(UpdateOutcome::NotFound);
        };
        if SubscriptionChange::of(&current) != expected {
            return Ok(UpdateOutcome::Stale);
        }
        let s = &change.settings;
        let mut row = diesel::update(subscriptions::table)
            .filter(subscriptions::id.eq(&id))
            .set((
                subscriptions::url.eq(&change.url),
                subscriptions::event_types.eq(&change.event_types),
                subscriptions::rate_limit_per_sec.eq(change.rate_limit.per_second),
                subscriptions::rate_limit_burst.eq(change.rate_limit.burst),
                subscriptions::enabled.eq(change.enabled),
                subscriptions::description.eq(s.description.as_deref()),
                subscriptions::metadata.eq(s.metadata_json()),
                subscriptions::headers.eq(s.headers_json()),
                subscriptions::max_attempts.eq(s.max_attempts),
                subscriptions::max_delay_secs.eq(s.max_delay_secs),
                subscriptions::timeout_ms.eq(s.timeout_ms),
                subscriptions::filter.eq(s.filter.as_deref()),
                subscriptions::auto_disable_after_secs.eq(s.auto_disable_after_secs),
                subscriptions::ordering.eq(s.ordering.as_str()),
                subscriptions::on_exhausted.eq(s.on_exhausted.as_str()),
            ))
            .returning(SubscriptionRow::as_returning())
            .get_result(conn)
            .await?;
        let (mut held, mut released) = (0, 0);
        if current.enabled && !change.enabled {
            held = hold(conn, &id).await?;
        } else if !current.enabled && change.enabled {
            released = release_held(conn, &id).await?;
            // Enabled again: whatever disabled it is over, and its health starts afresh (else
            // the next sweep would disable it again at once).
            row = diesel::update(subscriptions::table)
                .filter(subscriptions::id.eq(&id))
                .set((
                    subscriptions::disabled_reason.eq(None::<String>),
                    subscriptions::disabled_at.eq(None::<chrono::DateTime<chrono::Utc>>),
                    subscriptions::failing_since.eq(None::<chrono::DateTime<chrono::Utc>>),
                    subscriptions::failing_warned.eq(0),
                ))
                .returning(SubscriptionRow::as_returning())
                .get_result(conn)
                .await?;
        }
        let was = SubscriptionChange::of(&current).settings;
        if was.ordering == Ordering::PerKey && s.ordering == Ordering::None {
            super::ordering::stop_ordering(conn, &id).await?;
        } else if s.ordering == Ordering::PerKey
            && was.on_exhausted == OnExhausted::Block
            && s.on_exhausted == OnExhausted::Skip
        {
            super::ordering::unblock_all(conn, &id).await?;
        }
        Ok(UpdateOutcome::Updated {
            row: Box::new(row),
            held,
            released,
        })
    })
    .await
}

/// Holds the unfinished deliveries of subscription `id` (the caller holds its row lock). A
/// delivery in flight is held too: its outcome keeps it held, and should its worker die, its
/// expired lease is not taken while paused. The queue rows are locked first, in id order, as a
/// claim or an outcome locks them, so none of them deadlock with this.
pub(crate) async fn hold(conn: &mut AsyncPgConnection, id: &str) -> Result<usize, StoreError> {
    Ok(crate::prepared::prepared(
        "WITH queued AS MATERIALIZED (
             SELECT q.delivery_id FROM delivery_queue q
              WHERE q.subscription_id = $1
              ORDER BY q.delivery_id
              FOR UPDATE
         )
         UPDATE deliveries SET held = true
          WHERE id IN (SELECT delivery_id FROM queued)
            AND status IN ('pending', 'processing', 'retrying') AND NOT held",
    )
    .bind::<diesel::sql_types::Text, _>(id)
    .execute(conn)
    .await?)
}

/// Releases every held delivery of subscription `id` (the caller holds its row lock): each is
/// due again at its own `next_attempt_at` — when it was created, or when its retry was due —
/// so the oldest go first, paced by the destination's rate limit. Queue rows first, in id
/// order, as in [`hold`].
async fn release_held(conn: &mut AsyncPgConnection, id: &str) -> Result<usize, StoreError> {
    Ok(crate::prepared::prepared(
        "WITH queued AS MATERIALIZED (
             SELECT q.delivery_id FROM delivery_queue q
              WHERE q.delivery_id IN (SELECT d.id FROM deliveries d
                                       WHERE d.subscription_id = $1 AND d.held)
              ORDER BY q.delivery_id
              FOR UPDATE
         )
         UPDATE deliveries SET held = false
          WHERE subscription_id = $1 AND held",
    )
    .bind::<diesel::sql_types::Text, _>(id)
    .execute(conn)
    .await?)
}

/// How many of subscription `id`'s deliveries are held (for tests and operators).
#[cfg(feature = "tools")]
pub async fn held_count(conn: &mut AsyncPgConnection, id: &str) -> Result<i64, StoreError> {
    use crate::schema::deliveries;
    Ok(deliveries::table
        .filter(deliveries::subscription_id.eq(id))
        .filter(deliveries::held)
        .count()
        .get_result(conn)
        .await?)
}
