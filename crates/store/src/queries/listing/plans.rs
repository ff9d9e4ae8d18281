//! What PostgreSQL plans for the list statements (`EXPLAIN`), for the test that forbids
//! sequential scans of the history and for the `list` bench's report; tools and tests only.

use chrono::Utc;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::DeliveryStatus;

use super::{DeliveryFilter, EventCursor, EventFilter, deliveries_sql, events_sql, status_texts};
use crate::StoreError;

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text)]
    #[diesel(column_name = "QUERY PLAN")]
    line: String,
}

/// The plans PostgreSQL chooses for the list statements with these filters (one text per
/// statement: the event list, then the delivery list), for tests and for diagnosis.
pub async fn plans(
    conn: &mut AsyncPgConnection,
    events: &EventFilter,
    deliveries: &DeliveryFilter,
    cursor: bool,
) -> Result<Vec<String>, StoreError> {
    let event_cursor = cursor.then(|| EventCursor {
        received_at: Utc::now(),
        id: "evt".to_owned(),
    });
    let event_plan: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN {}", events_sql(events)))
        .bind::<Bool, _>(false)
        .bind::<Nullable<Timestamptz>, _>(event_cursor.as_ref().map(|c| c.received_at))
        .bind::<Nullable<Text>, _>(event_cursor.as_ref().map(|c| c.id.as_str()))
        .bind::<Nullable<Text>, _>(events.type_exact.as_deref())
        .bind::<Nullable<Text>, _>(events.type_prefix.as_deref())
        .bind::<Nullable<Text>, _>(events.source.as_deref())
        .bind::<Nullable<Timestamptz>, _>(events.received_after)
        .bind::<Nullable<Timestamptz>, _>(events.received_before)
        .bind::<Nullable<Text>, _>(events.subscription_id.as_deref())
        .bind::<Nullable<Text>, _>(events.status.map(DeliveryStatus::as_str))
        .bind::<BigInt, _>(50)
        .bind::<Text, _>(dispatch_domain::TenantId::DEFAULT)
        .load(conn)
        .await?;
    let delivery_plan: Vec<PlanLine> =
        diesel::sql_query(format!("EXPLAIN {}", deliveries_sql(deliveries)))
            .bind::<Nullable<Array<Text>>, _>(status_texts(&deliveries.statuses))
            .bind::<Nullable<Text>, _>(deliveries.subscription_id.as_deref())
            .bind::<Nullable<Text>, _>(deliveries.event_id.as_deref())
            .bind::<Nullable<Timestamptz>, _>(deliveries.updated_after)
            .bind::<Nullable<Timestamptz>, _>(deliveries.updated_before)
            .bind::<Text, _>(dispatch_domain::TenantId::DEFAULT)
            .bind::<Nullable<BigInt>, _>(cursor.then_some(i64::MAX))
            .bind::<BigInt, _>(50)
            .load(conn)
            .await?;
    let join = |lines: Vec<PlanLine>| {
        lines
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(vec![join(event_plan), join(delivery_plan)])
}
