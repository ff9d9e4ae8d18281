//! Seeding for the `list` benchmark (`cargo xtask bench --scenario list`): a month of history
//! shaped like a production database's (several event types and sources, subscriptions of
//! different sizes, one or two deliveries an event, ~97 % delivered, ~2 % failed, ~1 % still
//! pending or retrying, their attempts), inserted with set-based statements, and the few ids the
//! benchmark then asks the API about.
//!
//! Every choice is a hash of the event's number (`hashint8extended`), so a seed is the same on
//! every run, and the rows are inserted oldest first, so ids grow with time as they do in
//! production. The queue and `failed_deliveries` rows are written by the triggers of
//! `deliveries`, as for any insert.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// Event types and their share of events, in thousandths (cumulative in [`seed`]'s SQL).
pub const EVENT_TYPES: [(&str, u32); 6] = [
    ("order.created", 350),
    ("order.updated", 250),
    ("invoice.paid", 200),
    ("customer.created", 120),
    ("order.cancelled", 50),
    ("invoice.failed", 30),
];

/// Sources and their share of events, in thousandths.
pub const SOURCES: [(&str, u32); 4] = [
    ("shop", 500),
    ("billing", 300),
    ("crm", 180),
    ("legacy-erp", 20),
];

/// Each subscription's share of first deliveries, in thousandths (the second delivery of an
/// event goes to another subscription, uniformly). [`seed`] takes exactly this many ids.
pub const SUBSCRIPTION_SHARES: [u32; 8] = [400, 250, 150, 100, 50, 30, 15, 5];

/// Events with a second delivery, in thousandths: 1.3 deliveries an event.
pub const SECOND_DELIVERY_PERMILLE: u32 = 300;

/// Events numbered `first .. first + count` of `total`, received evenly over `span_secs` up to
/// `end` (event `total` at `end`), each with its deliveries and their attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct ListSeed<'a> {
    pub first: i64,
    pub count: i64,
    pub total: i64,
    pub end: DateTime<Utc>,
    pub span_secs: i64,
    /// As many as [`SUBSCRIPTION_SHARES`], the largest first.
    pub subscription_ids: &'a [String],
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The thresholds `width_bucket` needs: the running sums of `shares` but the last.
fn thresholds(shares: impl Iterator<Item = u32>) -> Vec<i64> {
    let mut sum = 0;
    let mut out: Vec<i64> = shares
        .map(|s| {
            sum += i64::from(s);
            sum
        })
        .collect();
    out.pop();
    out
}

/// Inserts one batch (events, deliveries, attempts) in one statement; returns the deliveries
/// stored.
pub async fn seed(conn: &mut AsyncPgConnection, seed: &ListSeed<'_>) -> Result<i64, StoreError> {
    if seed.subscription_ids.len() != SUBSCRIPTION_SHARES.len() || seed.count <= 0 {
        return Ok(0);
    }
    let types: Vec<&str> = EVENT_TYPES.iter().map(|(t, _)| *t).collect();
    let sources: Vec<&str> = SOURCES.iter().map(|(s, _)| *s).collect();
    let row: Count = diesel::sql_query(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data, received_at)
             SELECT 'evt_' || lpad(g::text, 9, '0'),
                    ($5::text[])[1 + width_bucket(h.t, $6::bigint[])],
                    ($7::text[])[1 + width_bucket(h.s, $8::bigint[])],
                    jsonb_build_object('seq', g, 'order',
                        jsonb_build_object('id', 'ord_' || g, 'amount_cents', g % 100000,
                                           'currency', 'EUR', 'items', g % 7 + 1)),
                    $3::timestamptz - make_interval(secs => $4::float8 * ($2 - g) / $2)
               FROM generate_series($1::bigint, $1::bigint + $9::bigint - 1) AS g,
                    LATERAL (SELECT mod(hashint8extended(g, 1) & 2147483647, 1000) AS t,
                                    mod(hashint8extended(g, 2) & 2147483647, 1000) AS s) h
              ORDER BY g
             RETURNING id, received_at, (data ->> 'seq')::bigint AS seq
         ), pick AS (
             SELECT ev.id, ev.received_at, ev.seq, k,
                    mod(hashint8extended(ev.seq * 2 + k, 6) & 2147483647, 1000) AS st,
                    CASE WHEN k = 1 THEN f.sub
                         ELSE 1 + mod(f.sub + mod(hashint8extended(ev.seq, 5) & 2147483647,
                                                  cardinality($10::text[]) - 1),
                                      cardinality($10::text[]))
                    END AS sub
               FROM ev
               CROSS JOIN LATERAL (SELECT 1 + width_bucket(
                        mod(hashint8extended(ev.seq, 4) & 2147483647, 1000), $11::bigint[])
                        AS sub) f
               CROSS JOIN LATERAL generate_series(1, CASE
                        WHEN mod(hashint8extended(ev.seq, 3) & 2147483647, 1000) < $12
                        THEN 2 ELSE 1 END) AS k
         ), shaped AS (
             SELECT p.*, CASE WHEN st < 20 THEN 'failed' WHEN st < 25 THEN 'retrying'
                              WHEN st < 30 THEN 'pending' ELSE 'delivered' END AS status,
                    CASE WHEN st < 20 THEN 8 WHEN st < 25 THEN 3 WHEN st < 30 THEN 0
                         WHEN st >= 950 THEN 2 ELSE 1 END AS tries
               FROM pick p
         ), dl AS (
             INSERT INTO deliveries (event_id, subscription_id, status, attempts,
                                     next_attempt_at, last_error, created_at, updated_at)
             SELECT id, ($10::text[])[sub], status, tries,
                    CASE WHEN status IN ('pending', 'retrying')
                         THEN $3::timestamptz + interval '1 hour' ELSE received_at END,
                    CASE WHEN status IN ('failed', 'retrying') THEN 'HTTP 503' END,
                    received_at,
                    least($3::timestamptz, received_at + CASE status
                        WHEN 'failed' THEN interval '1 day'
                        WHEN 'retrying' THEN interval '10 minutes'
                        WHEN 'pending' THEN interval '0'
                        ELSE interval '40 ms' + (tries - 1) * interval '30 seconds' END)
               FROM shaped
              ORDER BY seq, k
             RETURNING id, event_id, subscription_id, status, attempts, created_at, updated_at
         ), at AS (
             INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt,
                                   status_code, latency_ms, error_code, error, created_at)
             SELECT dl.id, dl.event_id, dl.subscription_id, n,
                    CASE WHEN dl.status = 'delivered' AND n = dl.attempts THEN 200 ELSE 503 END,
                    20 + (dl.id + n) % 180,
                    CASE WHEN dl.status = 'delivered' AND n = dl.attempts THEN NULL
                         ELSE 'http_status' END,
                    CASE WHEN dl.status = 'delivered' AND n = dl.attempts THEN NULL
                         ELSE 'HTTP 503' END,
                    dl.created_at + (dl.updated_at - dl.created_at) * (n - 1)
                                    / greatest(dl.attempts - 1, 1)
               FROM dl CROSS JOIN LATERAL generate_series(1, dl.attempts) AS n
              ORDER BY dl.id, n
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM dl) + 0 * (SELECT count(*) FROM at) AS n",
    )
    .bind::<BigInt, _>(seed.first)
    .bind::<BigInt, _>(seed.total)
    .bind::<Timestamptz, _>(seed.end)
    .bind::<BigInt, _>(seed.span_secs)
    .bind::<Array<Text>, _>(&types)
    .bind::<Array<BigInt>, _>(thresholds(EVENT_TYPES.iter().map(|(_, s)| *s)))
    .bind::<Array<Text>, _>(&sources)
    .bind::<Array<BigInt>, _>(thresholds(SOURCES.iter().map(|(_, s)| *s)))
    .bind::<BigInt, _>(seed.count)
    .bind::<Array<Text>, _>(seed.subscription_ids)
    .bind::<Array<BigInt>, _>(thresholds(SUBSCRIPTION_SHARES.iter().copied()))
    .bind::<BigInt, _>(i64::from(SECOND_DELIVERY_PERMILLE))
    .get_result(conn)
    .await?;
    Ok(row.n)
}

/// What the seeded database holds, and ids the benchmark asks about.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct ListFacts {
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    #[diesel(sql_type = BigInt)]
    pub deliveries: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub unfinished: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    /// An event halfway through the history with two deliveries.
    #[diesel(sql_type = Text)]
    pub event_with_two_deliveries: String,
    /// An event halfway through the failures (its failed delivery has 8 attempts).
    #[diesel(sql_type = Text)]
    pub failed_event: String,
}

/// Counts the seeded rows and picks the ids (a few index-served probes and three counts).
pub async fn facts(conn: &mut AsyncPgConnection) -> Result<ListFacts, StoreError> {
    Ok(diesel::sql_query(
        "SELECT (SELECT count(*) FROM events) AS events,
                (SELECT count(*) FROM deliveries) AS deliveries,
                (SELECT count(*) FROM failed_deliveries) AS failed,
                (SELECT count(*) FROM delivery_queue) AS unfinished,
                (SELECT count(*) FROM attempts) AS attempts,
                (SELECT d.event_id FROM deliveries d
                  WHERE d.id > (SELECT max(id) / 2 FROM deliveries)
                    AND EXISTS (SELECT 1 FROM deliveries o
                                 WHERE o.event_id = d.event_id AND o.id <> d.id)
                  ORDER BY d.id LIMIT 1) AS event_with_two_deliveries,
                (SELECT f.event_id FROM failed_deliveries f
                  WHERE f.delivery_id > (SELECT max(id) / 2 FROM deliveries)
                  ORDER BY f.delivery_id LIMIT 1) AS failed_event",
    )
    .get_result(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_whole_and_thresholds_leave_out_the_last() {
        for sum in [
            EVENT_TYPES.iter().map(|(_, s)| s).sum::<u32>(),
            SOURCES.iter().map(|(_, s)| s).sum(),
            SUBSCRIPTION_SHARES.iter().sum(),
        ] {
            assert_eq!(sum, 1000);
        }
        assert_eq!(thresholds([400, 250, 350].into_iter()), [400, 650]);
    }
}
