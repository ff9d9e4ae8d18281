//! What only the console needs from the database: its sessions (by the SHA-256 of the cookie's
//! token, never the token) and the overview's per-minute activity. Everything else the console
//! shows comes from the queries the JSON API uses.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bytea, Interval, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;

use crate::StoreError;

fn interval(d: std::time::Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
    )
}

/// Stores a new session that ends `lifetime` from now at the latest, signed in by the database
/// key `api_key_id` (`None`: a key of `DISPATCH_API_KEYS`), and removes every expired one on the
/// way (sign-ins are rare; nothing else needs to sweep the table).
pub async fn create_session(
    conn: &mut AsyncPgConnection,
    token_sha256: &[u8],
    lifetime: std::time::Duration,
    api_key_id: Option<&str>,
) -> Result<(), StoreError> {
    diesel::sql_query("DELETE FROM console_sessions WHERE expires_at <= now()")
        .execute(conn)
        .await?;
    diesel::sql_query(
        "INSERT INTO console_sessions (token_sha256, expires_at, api_key_id)
         VALUES ($1, now() + $2, $3)",
    )
    .bind::<Bytea, _>(token_sha256)
    .bind::<Interval, _>(interval(lifetime))
    .bind::<Nullable<Text>, _>(api_key_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A live session, as [`touch_session`] found it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct LiveSession {
    /// The database key that signed it in; `None` for a key of `DISPATCH_API_KEYS`.
    #[diesel(sql_type = Nullable<Text>)]
    pub api_key_id: Option<String>,
}

/// The session, if it is alive (before its absolute expiry, and seen within `idle`); it then
/// counts as seen now. A dead session is deleted. One `UPDATE … RETURNING`.
pub async fn touch_session(
    conn: &mut AsyncPgConnection,
    token_sha256: &[u8],
    idle: std::time::Duration,
) -> Result<Option<LiveSession>, StoreError> {
    let touched: Vec<LiveSession> = diesel::sql_query(
        "UPDATE console_sessions SET last_seen_at = now()
          WHERE token_sha256 = $1 AND expires_at > now() AND last_seen_at > now() - $2
          RETURNING api_key_id",
    )
    .bind::<Bytea, _>(token_sha256)
    .bind::<Interval, _>(interval(idle))
    .load(conn)
    .await?;
    let live = touched.into_iter().next();
    if live.is_none() {
        end_session(conn, token_sha256).await?;
    }
    Ok(live)
}

/// Signs a session out (nothing happens when there is no such session).
pub async fn end_session(
    conn: &mut AsyncPgConnection,
    token_sha256: &[u8],
) -> Result<(), StoreError> {
    diesel::sql_query("DELETE FROM console_sessions WHERE token_sha256 = $1")
        .bind::<Bytea, _>(token_sha256)
        .execute(conn)
        .await?;
    Ok(())
}

/// One minute of activity: events received, attempts that delivered and attempts that failed.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Minute {
    #[diesel(sql_type = Timestamptz)]
    pub minute: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    pub ingested: i64,
    #[diesel(sql_type = BigInt)]
    pub delivered: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
}

/// The last `minutes` whole minutes and the current one, oldest first, every minute listed
/// (zeros included). Events are counted along `events_received_at`; attempts as `stats` counts
/// them (a failure is an attempt with a failure code), reading only the span's attempts
/// ([`crate::queries::ops::recent_floor`]).
pub async fn activity(
    conn: &mut AsyncPgConnection,
    minutes: i64,
) -> Result<Vec<Minute>, StoreError> {
    let span = std::time::Duration::from_secs(u64::try_from(minutes + 1).unwrap_or(1) * 60);
    let floor = crate::queries::ops::recent_floor(conn, span).await?;
    Ok(diesel::sql_query(
        "WITH span AS (
             SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => $1::int),
                                    date_trunc('minute', now()), interval '1 minute') AS minute
         ), ingested AS (
             SELECT date_trunc('minute', received_at) AS minute, count(*) AS n
               FROM events
              WHERE received_at >= date_trunc('minute', now()) - make_interval(mins => $1::int)
              GROUP BY 1
         ), attempted AS (
             SELECT date_trunc('minute', created_at) AS minute,
                    count(*) FILTER (WHERE error_code IS NULL) AS delivered,
                    count(*) FILTER (WHERE error_code IS NOT NULL) AS failed
               FROM attempts
              WHERE id >= $2
                AND created_at >= date_trunc('minute', now()) - make_interval(mins => $1::int)
              GROUP BY 1
         )
         SELECT span.minute, coalesce(i.n, 0) AS ingested,
                coalesce(a.delivered, 0) AS delivered, coalesce(a.failed, 0) AS failed
           FROM span
           LEFT JOIN ingested i ON i.minute = span.minute
           LEFT JOIN attempted a ON a.minute = span.minute
          ORDER BY span.minute",
    )
    .bind::<BigInt, _>(minutes)
    .bind::<BigInt, _>(floor)
    .load(conn)
    .await?)
}

#[derive(QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Deliveries that are pending, processing, retrying or failed, counted in the small tables that
/// hold them (`delivery_queue`, `failed_deliveries`) rather than across the history, in
/// lifecycle order, zeros included. (`GET /stats` counts every status, `delivered` and
/// `cancelled` too, across `deliveries`: exact, and slower the longer the history.)
pub async fn open_counts(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(DeliveryStatus, i64)>, StoreError> {
    let rows: Vec<StatusCount> = diesel::sql_query(
        "SELECT CASE WHEN leased THEN 'processing' WHEN retry THEN 'retrying' ELSE 'pending' END
                    AS status, count(*) AS n
           FROM delivery_queue GROUP BY 1
         UNION ALL
         SELECT 'failed', count(*) FROM failed_deliveries",
    )
    .load(conn)
    .await?;
    let mut counts: Vec<(DeliveryStatus, i64)> = [
        DeliveryStatus::Pending,
        DeliveryStatus::Processing,
        DeliveryStatus::Retrying,
        DeliveryStatus::Failed,
    ]
    .into_iter()
    .map(|s| (s, 0))
    .collect();
    for row in rows {
        if let Some(entry) = counts.iter_mut().find(|(s, _)| s.as_str() == row.status) {
            entry.1 += row.n;
        }
    }
    Ok(counts)
}
