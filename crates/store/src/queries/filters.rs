//! Payload filters as PostgreSQL sees them: parsing a filter (`$1::jsonpath`), checking that it
//! is a predicate, and evaluating one against a sample event exactly as fan-out does
//! (`queries::events`).

use diesel::result::Error as DieselError;
use diesel::sql_types::{Bool, Jsonb, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::StoreError;

/// What PostgreSQL makes of a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterCheck {
    /// A predicate; `canonical` is the text PostgreSQL prints for it (keys and strings quoted),
    /// which `dispatch_domain::filter::check_features` reads.
    Predicate { canonical: String },
    /// Not SQL/JSON path syntax: PostgreSQL's message.
    Syntax(String),
    /// Parsed, but not a boolean expression (`$.data.amount` rather than
    /// `$.data.amount > 100`): PostgreSQL's message on a sample event.
    NotPredicate(String),
}

#[derive(diesel::QueryableByName)]
struct Canonical {
    #[diesel(sql_type = Text)]
    canonical: String,
}

#[derive(diesel::QueryableByName)]
struct Matched {
    #[diesel(sql_type = Nullable<Bool>)]
    matched: Option<bool>,
}

/// The message of an error PostgreSQL raised for this statement; any other failure (the
/// database unavailable, a connection lost) is the caller's.
fn rejected(error: DieselError) -> Result<String, StoreError> {
    match StoreError::from(error) {
        StoreError::Query(DieselError::DatabaseError(_, info)) => Ok(info.message().to_owned()),
        other => Err(other),
    }
}

/// Parses `filter` and evaluates it, with errors raised, against the smallest event
/// (`{"type": "", "source": "", "data": {}}`): a predicate answers true, false or unknown
/// whatever the event (errors inside a comparison make it unknown), while anything else either
/// yields no item, an item that is not a boolean, or an error.
pub async fn check(conn: &mut AsyncPgConnection, filter: &str) -> Result<FilterCheck, StoreError> {
    let parsed = diesel::sql_query("SELECT $1::jsonpath::text AS canonical")
        .bind::<Text, _>(filter)
        .get_result::<Canonical>(conn)
        .await;
    let canonical = match parsed {
        Ok(row) => row.canonical,
        Err(e) => return Ok(FilterCheck::Syntax(rejected(e)?)),
    };
    let sample = diesel::sql_query(
        "SELECT jsonb_path_match('{\"type\": \"\", \"source\": \"\", \"data\": {}}'::jsonb,
                                 $1::jsonpath) AS matched",
    )
    .bind::<Text, _>(filter)
    .get_result::<Matched>(conn)
    .await;
    Ok(match sample {
        Ok(_) => FilterCheck::Predicate { canonical },
        Err(e) => FilterCheck::NotPredicate(rejected(e)?),
    })
}

/// Whether `filter` selects the event `{type, source, data}`, as fan-out decides it: the same
/// document, and `silent`, so an error (a strict-mode type mismatch, say) or an unknown answer
/// is no match.
pub async fn matches(
    conn: &mut AsyncPgConnection,
    filter: &str,
    event_type: &str,
    source: &str,
    data: &serde_json::Value,
) -> Result<bool, StoreError> {
    let row: Matched = crate::prepared::prepared(
        "SELECT jsonb_path_match(jsonb_build_object('type', $1::text, 'source', $2::text,
                                                    'data', $3::jsonb),
                                 $4::jsonpath, '{}', true) AS matched",
    )
    .bind::<Text, _>(event_type)
    .bind::<Text, _>(source)
    .bind::<Jsonb, _>(data)
    .bind::<Text, _>(filter)
    .get_result(conn)
    .await?;
    Ok(row.matched.unwrap_or(false))
}
