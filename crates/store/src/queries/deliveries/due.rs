//! When work falls due: the next due time an idle worker sleeps until, and the backlog (due
//! deliveries and the oldest one's wait) from the queue's due index.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

#[derive(QueryableByName)]
struct NextDue {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
}

/// When the next waiting delivery (or lease) falls due, so an idle worker can sleep until then.
/// Deliveries of a destination whose circuit is open count from when it half-opens, since no
/// claim takes them before.
pub async fn next_due_at(
    conn: &mut AsyncPgConnection,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row: NextDue = crate::prepared::prepared(
        "SELECT least(
             -- Each kind along its own index; held deliveries ('infinity') never fall due.
             (SELECT q.due_at FROM delivery_queue q
               WHERE q.leased AND q.due_at < 'infinity' ORDER BY q.due_at LIMIT 1),
             -- First tries: each tenant's earliest, along the per-tenant index.
             (SELECT min(f.due_at) FROM tenants t
               CROSS JOIN LATERAL
                     (SELECT q.due_at FROM delivery_queue q
                       WHERE dispatch_tenant_of(q.subscription_id) = t.id
                         AND NOT q.retry AND NOT q.leased AND q.due_at < 'infinity'
                         AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                          WHERE s.id = q.subscription_id
                                            AND s.circuit_open_until > now())
                       ORDER BY dispatch_tenant_of(q.subscription_id), q.due_at LIMIT 1) f),
             (SELECT q.due_at FROM delivery_queue q
               WHERE q.retry AND NOT q.leased AND q.due_at < 'infinity'
                 AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                  WHERE s.id = q.subscription_id
                                    AND s.circuit_open_until > now())
               ORDER BY q.due_at LIMIT 1),
             -- Deliveries held by an open circuit fall due when it half-opens.
             (SELECT min(circuit_open_until) FROM subscriptions WHERE circuit_open_until > now())
         ) AS at",
    )
    .get_result(conn)
    .await?;
    Ok(row.at)
}

/// The backlog: deliveries due now and how long the oldest has waited.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Backlog {
    #[diesel(sql_type = BigInt)]
    pub due: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub oldest_due_age_secs: f64,
}

/// Counts due deliveries (waiting with their time reached, or with an expired lease) and the
/// age of the oldest, from the queue's due index.
pub async fn backlog(conn: &mut AsyncPgConnection) -> Result<Backlog, StoreError> {
    Ok(crate::prepared::prepared(
        "SELECT count(*) AS due,
                coalesce(extract(epoch FROM now() - min(due_at)), 0)::float8
                    AS oldest_due_age_secs
           FROM delivery_queue
          WHERE due_at <= now()",
    )
    .get_result(conn)
    .await?)
}
