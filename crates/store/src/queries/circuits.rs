//! Publishing destinations' circuit states, shared by every worker through the subscription
//! rows, with the `dispatch.circuit.*` operational events their changes cause.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::StoreError;
use crate::queries::operational::Emission;

/// A change of a destination's circuit, published by the worker that saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitUpdate {
    pub subscription_id: String,
    /// `closed`, `half_open` or `open`.
    pub state: &'static str,
    pub open_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// A circuit's published state before and after [`publish_circuits`] changed it.
#[derive(diesel::QueryableByName)]
struct CircuitChange {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    open_until: Option<DateTime<Utc>>,
    /// Open (and not yet due to half-open) before this change.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    was_open: bool,
    #[diesel(sql_type = Text)]
    was_state: String,
}

impl CircuitChange {
    /// The operational event this change is worth: an opening (also again after a failed
    /// half-open trial), or a closing of a circuit that was not closed.
    fn emission(&self) -> Option<Emission> {
        use dispatch_domain::operational::Operational;
        if self.state == "open" && !self.was_open {
            let until = self.open_until.map(|t| t.to_rfc3339());
            Some(
                Emission::new(
                    Operational::CircuitOpened,
                    &self.id,
                    "too many requests to the destination failed: requests are held until \
                     the circuit half-opens",
                )
                .with("open_until", until),
            )
        } else if self.state == "closed" && self.was_state != "closed" {
            Some(Emission::new(
                Operational::CircuitClosed,
                &self.id,
                "the destination answered the trial requests: deliveries flow again",
            ))
        } else {
            None
        }
    }
}

/// Publishes circuit changes in one transaction. An open circuit is never shortened by another
/// worker's news: `open_until` only grows while the circuit stays open, and a worker whose own
/// breaker half-opened or closed cannot clear a circuit that is still open. The waiting
/// deliveries of a destination whose circuit opened are put off until it half-opens (a deferral:
/// no attempt is spent), so claims stop walking past them in the due indexes. A circuit that
/// opened or closed by this change emits `dispatch.circuit.opened` / `.closed` in the same
/// transaction (rate-bounded: see [`crate::queries::operational::emit`]).
pub async fn publish_circuits(
    conn: &mut AsyncPgConnection,
    updates: &[CircuitUpdate],
) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = updates.iter().map(|u| u.subscription_id.as_str()).collect();
    let states: Vec<&str> = updates.iter().map(|u| u.state).collect();
    let until: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        updates.iter().map(|u| u.open_until).collect();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let changes: Vec<CircuitChange> = crate::prepared::prepared(
            "WITH before AS MATERIALIZED (
                 -- The state as it was, read under the lock the update takes anyway (one
                 -- that does not conflict with ingestion's key-share lock).
                 SELECT id, circuit_state, coalesce(circuit_open_until > now(), false) AS was_open
                   FROM subscriptions WHERE id = ANY ($1::text[])
                  ORDER BY id
                  FOR NO KEY UPDATE
             ), changed AS (
                 UPDATE subscriptions s
                    SET circuit_state = u.state,
                        circuit_open_until = CASE
                            WHEN u.state = 'open' THEN greatest(u.open_until, s.circuit_open_until)
                            ELSE NULL END,
                        circuit_changed_at = now()
                   FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(id, state, open_until),
                        before b
                  WHERE s.id = u.id AND b.id = u.id
                    AND (u.state = 'open' OR s.circuit_open_until IS NULL
                         OR s.circuit_open_until <= now())
                 RETURNING s.id, s.circuit_state AS state, s.circuit_open_until AS open_until,
                           b.was_open, b.circuit_state AS was_state
             ), held AS MATERIALIZED (
                 -- Along the hot queue; rows a claim holds right now are left as they are.
                 SELECT q.delivery_id, c.open_until
                   FROM delivery_queue q JOIN changed c ON c.id = q.subscription_id
                  WHERE c.open_until IS NOT NULL AND q.due_at < c.open_until
                  FOR UPDATE OF q SKIP LOCKED
             ), deferred AS (
                 UPDATE deliveries d
                    SET next_attempt_at = h.open_until, updated_at = now()
                   FROM held h
                  WHERE d.id = h.delivery_id
                    AND d.status IN ('pending', 'retrying')
                    AND d.next_attempt_at < h.open_until
             )
             SELECT * FROM changed",
        )
        .bind::<Array<Text>, _>(&ids)
        .bind::<Array<Text>, _>(&states)
        .bind::<Array<Nullable<Timestamptz>>, _>(&until)
        .load(conn)
        .await?;
        let emissions: Vec<Emission> = changes.iter().filter_map(CircuitChange::emission).collect();
        crate::queries::operational::emit(conn, &emissions).await?;
        Ok(())
    })
    .await
}
