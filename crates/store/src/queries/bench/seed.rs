//! Seeding a benchmark database in bulk: subscriptions (their filters and ordering), a backlog
//! of due deliveries, and finished history.

use super::*;

/// `count` subscriptions numbered `first .. first + count`: subscription `i` has the id
/// `{id_prefix}{i}`, the URL `{url_prefix}{i}{url_suffix}` and the single pattern `pattern`, or
/// `{pattern}{i}` when `pattern_per_index`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSeed<'a> {
    pub id_prefix: &'a str,
    pub url_prefix: &'a str,
    pub url_suffix: &'a str,
    pub pattern: &'a str,
    pub pattern_per_index: bool,
    pub first: i32,
    pub count: i32,
    pub secret: &'a str,
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: i32,
}

/// Inserts the subscriptions in one statement; returns how many were stored.
pub async fn seed_subscriptions(
    conn: &mut AsyncPgConnection,
    seed: &SubscriptionSeed<'_>,
) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(
        "INSERT INTO subscriptions (id, url, event_types, secret, rate_limit_per_sec,
                                    rate_limit_burst)
         SELECT $1 || g, $2 || g || $3,
                ARRAY[CASE WHEN $5 THEN $4 || g ELSE $4 END],
                $6, $7, $8
           FROM generate_series($9, $9 + $10 - 1) AS g",
    )
    .bind::<Text, _>(seed.id_prefix)
    .bind::<Text, _>(seed.url_prefix)
    .bind::<Text, _>(seed.url_suffix)
    .bind::<Text, _>(seed.pattern)
    .bind::<Bool, _>(seed.pattern_per_index)
    .bind::<Text, _>(seed.secret)
    .bind::<Double, _>(seed.rate_limit_per_sec)
    .bind::<Integer, _>(seed.rate_limit_burst)
    .bind::<Integer, _>(seed.first)
    .bind::<Integer, _>(seed.count)
    .execute(conn)
    .await?)
}

/// Sets the payload filter (the `filter_path` PostgreSQL generates from it is what fan-out
/// evaluates) and the `ordering` of subscriptions `{id_prefix}{first}` …
/// `{id_prefix}{first + count - 1}`, where given; returns how many were updated.
pub async fn set_settings(
    conn: &mut AsyncPgConnection,
    id_prefix: &str,
    (first, count): (i32, i32),
    filter: Option<&str>,
    ordering: Option<&str>,
) -> Result<usize, StoreError> {
    if filter.is_none() && ordering.is_none() {
        return Ok(0);
    }
    Ok(diesel::sql_query(
        "UPDATE subscriptions SET filter = coalesce($4, filter), ordering = coalesce($5, ordering)
          WHERE id IN (SELECT $1 || g FROM generate_series($2, $2 + $3 - 1) AS g)",
    )
    .bind::<Text, _>(id_prefix)
    .bind::<Integer, _>(first)
    .bind::<Integer, _>(count)
    .bind::<diesel::sql_types::Nullable<Text>, _>(filter)
    .bind::<diesel::sql_types::Nullable<Text>, _>(ordering)
    .execute(conn)
    .await?)
}

/// `count` events numbered `1 ..= count` (id `{id_prefix}{i}`, type `event_type`, source
/// `bench`, data `{"seq": i, "sent_at_ns": "<sent_at_ns>"}`), each with one delivery that is due
/// now, to `subscription_ids[i % len]`, and that delivery's row in the work queue
/// (`delivery_queue`): a backlog as if it had been ingested while no worker ran.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogSeed<'a> {
    pub id_prefix: &'a str,
    pub event_type: &'a str,
    pub count: i64,
    /// Unix time in nanoseconds, as decimal text (a JSON number would lose digits in `jsonb`).
    pub sent_at_ns: &'a str,
    pub subscription_ids: &'a [String],
}

/// Inserts the events, their deliveries and the deliveries' queue rows (due now) in one
/// statement; returns the deliveries queued. (Triggers on `deliveries` may enqueue them too; the
/// queue's key keeps one row per delivery either way.)
pub async fn seed_backlog(
    conn: &mut AsyncPgConnection,
    seed: &BacklogSeed<'_>,
) -> Result<i64, StoreError> {
    if seed.subscription_ids.is_empty() || seed.count <= 0 {
        return Ok(0);
    }
    let row: Count = diesel::sql_query(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data)
             SELECT $1 || g, $2, 'bench',
                    jsonb_build_object('seq', g, 'sent_at_ns', $4::text)
               FROM generate_series(1, $3) AS g
             RETURNING id, (data ->> 'seq')::bigint AS seq
         ), dl AS (
             INSERT INTO deliveries (event_id, subscription_id)
             SELECT ev.id, ($5::text[])[1 + ev.seq % cardinality($5::text[])]
               FROM ev
             RETURNING id, subscription_id
         ), q AS (
             INSERT INTO delivery_queue (delivery_id, subscription_id, due_at)
             SELECT id, subscription_id, now() FROM dl
             ON CONFLICT (delivery_id) DO NOTHING
             RETURNING 1
         )
         SELECT count(*) AS n FROM q",
    )
    .bind::<Text, _>(seed.id_prefix)
    .bind::<Text, _>(seed.event_type)
    .bind::<BigInt, _>(seed.count)
    .bind::<Text, _>(seed.sent_at_ns)
    .bind::<Array<Text>, _>(seed.subscription_ids)
    .get_result(conn)
    .await?;
    Ok(row.n)
}

/// Finished history: events numbered `first .. first + count` (id `{id_prefix}{i}`, type
/// `bench.history`, received a day ago), each with one `delivered` delivery (one attempt) to
/// `subscription_ids[i % len]` and that attempt's row (200, 5 ms). Finished deliveries have no
/// queue row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistorySeed<'a> {
    pub id_prefix: &'a str,
    pub first: i64,
    pub count: i64,
    pub subscription_ids: &'a [String],
}

/// Inserts one batch of history in one statement; returns the attempts stored (one a delivery).
pub async fn seed_history(
    conn: &mut AsyncPgConnection,
    seed: &HistorySeed<'_>,
) -> Result<i64, StoreError> {
    if seed.subscription_ids.is_empty() || seed.count <= 0 {
        return Ok(0);
    }
    let row: Count = diesel::sql_query(
        "WITH ev AS (
             INSERT INTO events (id, event_type, source, data, received_at)
             SELECT $1 || g, 'bench.history', 'bench', jsonb_build_object('seq', g),
                    now() - interval '1 day'
               FROM generate_series($2::bigint, $2::bigint + $3::bigint - 1) AS g
             RETURNING id, (data ->> 'seq')::bigint AS seq
         ), dl AS (
             INSERT INTO deliveries (event_id, subscription_id, status, attempts, created_at,
                                     updated_at)
             SELECT ev.id, ($4::text[])[1 + ev.seq % cardinality($4::text[])], 'delivered', 1,
                    now() - interval '1 day', now() - interval '1 day'
               FROM ev
             RETURNING id, event_id, subscription_id
         ), at AS (
             INSERT INTO attempts (delivery_id, event_id, subscription_id, attempt, status_code,
                                   latency_ms, created_at)
             SELECT id, event_id, subscription_id, 1, 200, 5, now() - interval '1 day'
               FROM dl
             RETURNING 1
         )
         SELECT count(*) AS n FROM at",
    )
    .bind::<Text, _>(seed.id_prefix)
    .bind::<BigInt, _>(seed.first)
    .bind::<BigInt, _>(seed.count)
    .bind::<Array<Text>, _>(seed.subscription_ids)
    .get_result(conn)
    .await?;
    Ok(row.n)
}
