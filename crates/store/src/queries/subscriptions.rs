//! Creating, listing, reading and deleting subscriptions.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;

use crate::StoreError;
use crate::models::{NewSubscription, SubscriptionRow};
use crate::schema::{deliveries, subscriptions};

/// Stores a new subscription; `None` when its id is taken (also by a deleted subscription:
/// ids are never reused, so history stays unambiguous).
pub async fn insert(
    conn: &mut AsyncPgConnection,
    new: &NewSubscription,
) -> Result<Option<SubscriptionRow>, StoreError> {
    let patterns: Vec<&str> = new.event_types.iter().map(|p| p.as_str()).collect();
    Ok(diesel::insert_into(subscriptions::table)
        .values((
            subscriptions::id.eq(new.id.as_str()),
            subscriptions::url.eq(new.url.as_str()),
            subscriptions::event_types.eq(patterns),
            subscriptions::secret.eq(new.secret.as_deref()),
            subscriptions::rate_limit_per_sec.eq(new.rate_limit.per_second),
            subscriptions::rate_limit_burst.eq(new.rate_limit.burst),
        ))
        .on_conflict_do_nothing()
        .returning(SubscriptionRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// A subscription that has not been deleted.
pub async fn find_active(
    conn: &mut AsyncPgConnection,
    id: &str,
) -> Result<Option<SubscriptionRow>, StoreError> {
    Ok(subscriptions::table
        .filter(subscriptions::id.eq(id))
        .filter(subscriptions::deleted_at.is_null())
        .select(SubscriptionRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Up to `limit` active subscriptions with ids after `after`, in id order (keyset pagination).
pub async fn list_active(
    conn: &mut AsyncPgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<SubscriptionRow>, StoreError> {
    let mut query = subscriptions::table
        .filter(subscriptions::deleted_at.is_null())
        .order(subscriptions::id)
        .limit(limit)
        .select(SubscriptionRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(subscriptions::id.gt(after));
    }
    Ok(query.load(conn).await?)
}

/// Marks the subscription deleted and cancels its unfinished deliveries, in one transaction.
/// Returns how many deliveries were cancelled, or `None` if no active subscription has this id.
pub async fn delete(conn: &mut AsyncPgConnection, id: &str) -> Result<Option<usize>, StoreError> {
    let id = id.to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        // FOR UPDATE conflicts with the key-share lock ingestion takes on the subscriptions it
        // fans out to, so no delivery can slip in between this and the cancellation below.
        let locked = subscriptions::table
            .filter(subscriptions::id.eq(&id))
            .filter(subscriptions::deleted_at.is_null())
            .select(subscriptions::id)
            .for_update()
            .first::<String>(conn)
            .await
            .optional()?;
        if locked.is_none() {
            return Ok(None);
        }
        let deleted = diesel::update(subscriptions::table)
            .filter(subscriptions::id.eq(&id))
            .filter(subscriptions::deleted_at.is_null())
            .set(subscriptions::deleted_at.eq(diesel::dsl::now))
            .execute(conn)
            .await?;
        if deleted == 0 {
            return Ok(None);
        }
        let unfinished = [
            DeliveryStatus::Pending.as_str(),
            DeliveryStatus::Processing.as_str(),
            DeliveryStatus::Retrying.as_str(),
        ];
        let cancelled = diesel::update(deliveries::table)
            .filter(deliveries::subscription_id.eq(&id))
            .filter(deliveries::status.eq_any(unfinished))
            .set((
                deliveries::status.eq(DeliveryStatus::Cancelled.as_str()),
                deliveries::leased_by.eq(None::<String>),
                deliveries::leased_until.eq(None::<chrono::DateTime<chrono::Utc>>),
                deliveries::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(Some(cancelled))
    })
    .await
}

/// A change of a destination's circuit, published by the worker that saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitUpdate {
    pub subscription_id: String,
    /// `closed`, `half_open` or `open`.
    pub state: &'static str,
    pub open_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Publishes circuit changes in one statement. An open circuit is never shortened by another
/// worker's news: `open_until` only grows while the circuit stays open, and a worker whose own
/// breaker half-opened or closed cannot clear a circuit that is still open.
pub async fn publish_circuits(
    conn: &mut AsyncPgConnection,
    updates: &[CircuitUpdate],
) -> Result<(), StoreError> {
    use diesel::sql_types::{Array, Nullable, Text, Timestamptz};
    if updates.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = updates.iter().map(|u| u.subscription_id.as_str()).collect();
    let states: Vec<&str> = updates.iter().map(|u| u.state).collect();
    let until: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        updates.iter().map(|u| u.open_until).collect();
    diesel::sql_query(
        "UPDATE subscriptions s
            SET circuit_state = u.state,
                circuit_open_until = CASE
                    WHEN u.state = 'open' THEN greatest(u.open_until, s.circuit_open_until)
                    ELSE NULL END,
                circuit_changed_at = now()
           FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(id, state, open_until)
          WHERE s.id = u.id
            AND (u.state = 'open' OR s.circuit_open_until IS NULL
                 OR s.circuit_open_until <= now())",
    )
    .bind::<Array<Text>, _>(ids)
    .bind::<Array<Text>, _>(states)
    .bind::<Array<Nullable<Timestamptz>>, _>(until)
    .execute(conn)
    .await?;
    Ok(())
}
