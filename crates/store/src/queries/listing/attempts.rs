//! A page of attempts, of one event or one delivery, oldest first, within the caller's tenant.

use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use dispatch_domain::TenantId;

use crate::StoreError;

/// Whose attempts a page lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptsOf<'a> {
    Event(&'a str),
    Delivery(i64),
}

/// A page of `tenant`'s attempts, oldest first (by id), with ids above `cursor`.
pub async fn attempts(
    conn: &mut AsyncPgConnection,
    tenant: &TenantId,
    of: AttemptsOf<'_>,
    cursor: Option<i64>,
    limit: i64,
) -> Result<Vec<crate::models::AttemptRow>, StoreError> {
    use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};

    use crate::schema::attempts;
    let mut query = attempts::table
        .filter(attempts::id.gt(cursor.unwrap_or(0)))
        .order(attempts::id)
        .limit(limit)
        .select(crate::models::AttemptRow::as_select())
        .into_boxed();
    query = match of {
        AttemptsOf::Event(id) => query.filter(attempts::event_id.eq(tenant.stored_id(id))),
        AttemptsOf::Delivery(id) => query.filter(attempts::delivery_id.eq(id)).filter(
            diesel::dsl::sql::<Bool>("dispatch_tenant_of(attempts.subscription_id) = ")
                .bind::<Text, _>(tenant.as_str().to_owned()),
        ),
    };
    Ok(query.load(conn).await?)
}
