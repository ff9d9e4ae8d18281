//! Creating, listing, reading and deleting subscriptions; their secrets are sealed with the
//! keyring on every write (the plaintext never reaches the database), and rotated and re-sealed
//! in `secrets.rs`.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use dispatch_domain::TenantId;
use dispatch_domain::sealing::Keyring;

use crate::StoreError;
use crate::models::{NewSubscription, SubscriptionRow};

pub use super::circuits::{CircuitUpdate, publish_circuits};
use crate::schema::subscriptions;
pub use secrets::*;

mod secrets;

pub(super) fn seal(
    keyring: &Keyring,
    subscription_id: &str,
    secret: &str,
) -> Result<String, StoreError> {
    keyring
        .seal(subscription_id, secret)
        .map_err(|source| StoreError::Seal {
            subscription_id: subscription_id.to_owned(),
            source,
        })
}

pub(super) fn interval(d: Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Stores a new subscription, its secret sealed with `keyring`'s active key; `None` when its id
/// is taken (also by a deleted subscription: ids are never reused, so history stays
/// unambiguous).
pub async fn insert(
    conn: &mut AsyncPgConnection,
    new: &NewSubscription,
    keyring: &Keyring,
) -> Result<Option<SubscriptionRow>, StoreError> {
    let patterns: Vec<&str> = new.event_types.iter().map(|p| p.as_str()).collect();
    let stored_id = new.tenant.stored_id(new.id.as_str());
    let sealed = new
        .secret
        .as_deref()
        .map(|secret| seal(keyring, &stored_id, secret))
        .transpose()?;
    Ok(diesel::insert_into(subscriptions::table)
        .values((
            subscriptions::id.eq(&stored_id),
            subscriptions::tenant_id.eq(new.tenant.as_str()),
            subscriptions::url.eq(new.url.as_str()),
            subscriptions::event_types.eq(patterns),
            subscriptions::sealed_secret.eq(sealed),
            subscriptions::rate_limit_per_sec.eq(new.rate_limit.per_second),
            subscriptions::rate_limit_burst.eq(new.rate_limit.burst),
            subscriptions::enabled.eq(new.enabled),
            subscriptions::description.eq(new.settings.description.as_deref()),
            subscriptions::metadata.eq(new.settings.metadata_json()),
            subscriptions::headers.eq(new.settings.headers_json()),
            subscriptions::max_attempts.eq(new.settings.max_attempts),
            subscriptions::max_delay_secs.eq(new.settings.max_delay_secs),
            subscriptions::timeout_ms.eq(new.settings.timeout_ms),
            subscriptions::filter.eq(new.settings.filter.as_deref()),
            subscriptions::auto_disable_after_secs.eq(new.settings.auto_disable_after_secs),
            subscriptions::ordering.eq(new.settings.ordering.as_str()),
            subscriptions::on_exhausted.eq(new.settings.on_exhausted.as_str()),
        ))
        .on_conflict_do_nothing()
        .returning(SubscriptionRow::as_returning())
        .get_result(conn)
        .await
        .optional()?)
}

/// What [`insert_within`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    Created(Box<SubscriptionRow>),
    /// The id is taken in its tenant (also by a deleted subscription).
    Taken,
    /// The tenant has this many live subscriptions: as many as the limit allows.
    LimitReached(i64),
}

/// [`insert`], refused when the subscription's tenant already has `max` live subscriptions
/// (`None`: no limit). The tenant's row is locked while counting, so concurrent creations
/// cannot both pass the limit.
pub async fn insert_within(
    conn: &mut AsyncPgConnection,
    new: &NewSubscription,
    keyring: &Keyring,
    max: Option<i32>,
) -> Result<Inserted, StoreError> {
    let Some(max) = max else {
        return Ok(insert(conn, new, keyring)
            .await?
            .map_or(Inserted::Taken, |row| Inserted::Created(Box::new(row))));
    };
    let (new, keyring) = (new.clone(), keyring.clone());
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let live = super::tenants::lock_and_count_subscriptions(conn, &new.tenant).await?;
        if live >= i64::from(max) {
            return Ok(Inserted::LimitReached(live));
        }
        Ok(insert(conn, &new, &keyring)
            .await?
            .map_or(Inserted::Taken, |row| Inserted::Created(Box::new(row))))
    })
    .await
}

/// A subscription of `tenant` that has not been deleted.
pub async fn find_active(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<SubscriptionRow>, StoreError> {
    Ok(subscriptions::table
        .filter(subscriptions::id.eq(tenant.stored_id(id)))
        .filter(subscriptions::deleted_at.is_null())
        .select(SubscriptionRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Up to `limit` active subscriptions of `tenant` with ids after `after`, in id order (keyset
/// pagination).
pub async fn list_active(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<SubscriptionRow>, StoreError> {
    let mut query = subscriptions::table
        .filter(subscriptions::tenant_id.eq(tenant.as_str()))
        .filter(subscriptions::deleted_at.is_null())
        .order(subscriptions::id)
        .limit(limit)
        .select(SubscriptionRow::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(subscriptions::id.gt(tenant.stored_id(after)));
    }
    Ok(query.load(conn).await?)
}

/// Marks the subscription deleted and cancels its unfinished deliveries, in one transaction.
/// Returns how many deliveries were cancelled, or `None` if `tenant` has no active subscription
/// with this id.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<usize>, StoreError> {
    let id = tenant.stored_id(id);
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
        // Along the hot queue (unfinished deliveries only), its rows locked first as a claim
        // locks them, so this and a concurrent claim never deadlock.
        let cancelled = crate::prepared::prepared(
            "WITH queued AS MATERIALIZED (
                 SELECT q.delivery_id FROM delivery_queue q
                  WHERE q.subscription_id = $1
                  ORDER BY q.delivery_id
                  FOR UPDATE
             )
             UPDATE deliveries
                SET status = 'cancelled', leased_by = NULL, leased_until = NULL,
                    updated_at = now()
              WHERE id IN (SELECT delivery_id FROM queued)
                AND status IN ('pending', 'processing', 'retrying')",
        )
        .bind::<diesel::sql_types::Text, _>(&id)
        .execute(conn)
        .await?;
        Ok(Some(cancelled))
    })
    .await
}
