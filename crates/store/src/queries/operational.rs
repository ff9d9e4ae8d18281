//! Emitting operational events (`dispatch.*`): stored as events and fanned out like a
//! producer's, within the caller's transaction — the one that makes the change they report — and
//! rate-bounded per subscription and type in PostgreSQL, so every replica counts together.

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Int4, Jsonb, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::operational::{self, Operational};
use dispatch_domain::tenant::external_id;

use crate::StoreError;

/// One operational event to emit: its kind, the subscription it is about (its stored id; the
/// event goes to that subscription's tenant), and its data (the `subscription_id` and `reason`
/// members are added here).
#[derive(Debug, Clone, PartialEq)]
pub struct Emission {
    pub kind: Operational,
    pub subscription_id: String,
    pub reason: String,
    /// More members of the event's `data` (an object).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Emission {
    pub fn new(kind: Operational, subscription_id: &str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            subscription_id: subscription_id.to_owned(),
            reason: reason.into(),
            details: serde_json::Map::new(),
        }
    }

    /// Adds `key` to the event's data.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The event's data, as its tenant's receivers know the ids in it (never stored ids).
    fn data(&self) -> serde_json::Value {
        let mut data = self.details.clone();
        if let Some(serde_json::Value::String(event_id)) = data.get_mut("event_id") {
            *event_id = external_id(event_id).to_owned();
        }
        data.insert(
            "subscription_id".to_owned(),
            external_id(&self.subscription_id).into(),
        );
        data.insert("reason".to_owned(), self.reason.clone().into());
        serde_json::Value::Object(data)
    }
}

/// What [`emit`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, QueryableByName)]
pub struct Emitted {
    /// Events stored.
    #[diesel(sql_type = BigInt)]
    pub events: i64,
    /// Deliveries created for them.
    #[diesel(sql_type = BigInt)]
    pub deliveries: i64,
}

/// Stores the operational events `emissions` describe, each with one delivery per subscription
/// whose patterns name it (`*` does not), other than the subscription it is about; in one
/// statement, inside the caller's transaction. One that no subscription's patterns name is not
/// stored at all (an install that does not listen sees no `dispatch.*` events). Per subscription and kind, at most the kind's
/// [`RateBound`](operational::RateBound) are stored per window; the rest are counted, and the
/// first one stored in a later window reports them in its data's `suppressed`. The caller
/// takes care that no operational event is emitted about an operational event's delivery.
pub async fn emit(
    conn: &mut AsyncPgConnection,
    emissions: &[Emission],
) -> Result<Emitted, StoreError> {
    if emissions.is_empty() {
        return Ok(Emitted::default());
    }
    let ids: Vec<String> = emissions
        .iter()
        .map(|_| operational::new_event_id())
        .collect();
    let types: Vec<&str> = emissions.iter().map(|e| e.kind.event_type()).collect();
    let subjects: Vec<&str> = emissions
        .iter()
        .map(|e| e.subscription_id.as_str())
        .collect();
    let data: Vec<serde_json::Value> = emissions.iter().map(Emission::data).collect();
    let patterns: Vec<String> = emissions
        .iter()
        .map(|e| e.kind.matching_patterns().join(" "))
        .collect();
    let max: Vec<i32> = emissions
        .iter()
        .map(|e| i32::try_from(e.kind.rate_bound().max).unwrap_or(i32::MAX))
        .collect();
    let per: Vec<i32> = emissions
        .iter()
        .map(|e| i32::try_from(e.kind.rate_bound().per.as_secs()).unwrap_or(i32::MAX))
        .collect();
    Ok(crate::prepared::prepared(concat!(
        "WITH cand AS (
             -- Only what some subscription (other than its subject) asks for: an operational
             -- event nobody subscribes to is neither stored nor counted against its bound.
             -- In the subject's tenant, its id stored as `TenantId::stored_id` spells it.
             SELECT c.*, t.tenant_id,
                    CASE WHEN t.tenant_id = 'default' THEN c.raw_id
                         ELSE t.tenant_id || '/' || c.raw_id END AS id
               FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[],
                           $6::int4[], $7::int4[])
                    WITH ORDINALITY AS c(raw_id, event_type, subscription_id, data, patterns,
                                         window_max, window_secs, idx)
              CROSS JOIN LATERAL (SELECT dispatch_tenant_of(c.subscription_id) AS tenant_id) t
              WHERE EXISTS (SELECT 1 FROM subscriptions s
                             WHERE s.deleted_at IS NULL
                               AND s.tenant_id = t.tenant_id
                               AND s.event_types && string_to_array(c.patterns, ' ')
                               AND s.id <> c.subscription_id)
         ), grouped AS (
             SELECT subscription_id, event_type, count(*)::int4 AS n,
                    min(window_max) AS window_max, min(window_secs) AS window_secs
               FROM cand GROUP BY subscription_id, event_type
         ), win AS (
             -- Per (subscription, type): a window that is over starts afresh and carries the
             -- count it suppressed; else as many as its room allows, the rest suppressed.
             INSERT INTO operational_event_windows AS w
                    (subscription_id, event_type, window_start, window_secs, window_max,
                     emitted, suppressed, allowed, carried)
             SELECT subscription_id, event_type, now(), window_secs, window_max,
                    least(n, window_max), n - least(n, window_max), least(n, window_max), 0
               FROM grouped
              ORDER BY subscription_id, event_type
             ON CONFLICT (subscription_id, event_type) DO UPDATE
                SET window_start = CASE WHEN w.window_start
                                             + make_interval(secs => EXCLUDED.window_secs) <= now()
                                        THEN now() ELSE w.window_start END,
                    window_secs = EXCLUDED.window_secs,
                    window_max = EXCLUDED.window_max,
                    allowed = CASE WHEN w.window_start
                                        + make_interval(secs => EXCLUDED.window_secs) <= now()
                                   THEN EXCLUDED.allowed
                                   ELSE least(EXCLUDED.emitted + EXCLUDED.suppressed,
                                              greatest(0, EXCLUDED.window_max - w.emitted)) END,
                    emitted = CASE WHEN w.window_start
                                        + make_interval(secs => EXCLUDED.window_secs) <= now()
                                   THEN EXCLUDED.emitted
                                   ELSE w.emitted
                                        + least(EXCLUDED.emitted + EXCLUDED.suppressed,
                                                greatest(0, EXCLUDED.window_max - w.emitted)) END,
                    suppressed = CASE WHEN w.window_start
                                           + make_interval(secs => EXCLUDED.window_secs) <= now()
                                      THEN EXCLUDED.suppressed
                                      ELSE w.suppressed + EXCLUDED.emitted + EXCLUDED.suppressed
                                           - least(EXCLUDED.emitted + EXCLUDED.suppressed,
                                                   greatest(0, EXCLUDED.window_max - w.emitted))
                                  END,
                    carried = CASE WHEN w.window_start
                                        + make_interval(secs => EXCLUDED.window_secs) <= now()
                                   THEN w.suppressed ELSE 0 END
             RETURNING w.subscription_id, w.event_type, w.allowed, w.carried
         ), chosen AS (
             SELECT c.*, row_number() OVER (PARTITION BY c.subscription_id, c.event_type
                                            ORDER BY c.idx) AS rn
               FROM cand c
         ), ev AS (
             INSERT INTO events (id, event_type, source, data, tenant_id)
             SELECT c.id, c.event_type, $8,
                    c.data || jsonb_build_object('suppressed',
                                                 CASE WHEN c.rn = 1 THEN w.carried ELSE 0 END),
                    c.tenant_id
               FROM chosen c
               JOIN win w ON w.subscription_id = c.subscription_id
                         AND w.event_type = c.event_type
              WHERE c.rn <= w.allowed
              ORDER BY c.id
             RETURNING id, event_type, source, data
         ), fan AS (
             SELECT ev.id, ev.event_type, ev.source, ev.data, c.patterns,
                    NULL::text AS ordering_key, c.subscription_id AS subject, c.tenant_id
               FROM ev JOIN cand c ON c.id = ev.id
         ), dl AS (",
        super::fan_out::fan_out_sql!(),
        "
         )
         SELECT (SELECT count(*) FROM ev) AS events, (SELECT count(*) FROM dl) AS deliveries"
    ))
    .bind::<Array<Text>, _>(&ids)
    .bind::<Array<Text>, _>(&types)
    .bind::<Array<Text>, _>(&subjects)
    .bind::<Array<Jsonb>, _>(&data)
    .bind::<Array<Text>, _>(&patterns)
    .bind::<Array<Int4>, _>(&max)
    .bind::<Array<Int4>, _>(&per)
    .bind::<Text, _>(operational::SOURCE)
    .get_result(conn)
    .await?)
}
