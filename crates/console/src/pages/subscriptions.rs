//! Subscriptions: the list with circuit state and the last hour's success rate, one
//! subscription's page, and its edit, pause and resume, run through the API's own route code
//! ([`Action`]); `subscription_actions.rs` has the rest of its changes.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use dispatch_domain::SubscriptionId;
use dispatch_store::models::SubscriptionRow;
use dispatch_store::queries::{ops, subscriptions};
use serde_json::{Value, json};

use super::events::time;
use crate::Console;
use crate::actions::Action;
use crate::error::{ConsoleError, html};
use crate::form::Fields;
use crate::session::Session;

/// Each subscription's last hour (as `GET /stats` shows it), reading only that hour's attempts.
async fn recent(
    conn: &mut dispatch_store::AsyncPgConnection,
) -> Result<Vec<ops::SubscriptionStats>, ConsoleError> {
    let hour = Duration::from_secs(3600);
    let floor = ops::recent_floor(conn, hour).await?;
    Ok(ops::subscription_stats(conn, hour, floor).await?)
}

/// Subscriptions the list shows (the JSON API pages through more).
const LIST_LIMIT: i64 = 500;

struct Line {
    id: String,
    url: String,
    patterns: String,
    state: &'static str,
    circuit: String,
    success: String,
    due: i64,
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct ListPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    lines: Vec<Line>,
    truncated: bool,
}

fn rate(attempts: i64, failures: i64) -> String {
    if attempts == 0 {
        "no attempts".to_owned()
    } else {
        format!(
            "{:.1} % of {attempts}",
            (attempts - failures) as f64 * 100.0 / attempts as f64
        )
    }
}

pub async fn list(
    session: Session,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    let mut rows =
        subscriptions::list_active(&mut conn, &session.tenant, None, LIST_LIMIT + 1).await?;
    let stats = recent(&mut conn).await?;
    drop(conn);
    let truncated = rows.len() as i64 > LIST_LIMIT;
    rows.truncate(LIST_LIMIT as usize);
    let lines = rows
        .into_iter()
        .map(|row| {
            let s = stats.iter().find(|s| s.id == row.id);
            Line {
                url: row.url,
                patterns: row.event_types.join(", "),
                state: if row.enabled { "active" } else { "paused" },
                circuit: row.circuit_state.replace('_', "-"),
                success: s.map_or_else(|| rate(0, 0), |s| rate(s.attempts, s.failures)),
                due: s.map_or(0, |s| s.due),
                id: row.id,
            }
        })
        .collect();
    Ok(html(
        StatusCode::OK,
        &ListPage {
            title: "Subscriptions",
            csrf: session.csrf.clone(),
            nav: "subscriptions",
            lines,
            truncated,
        },
    ))
}

#[derive(Template)]
#[template(path = "subscription.html")]
struct ShowPage {
    title: String,
    csrf: String,
    nav: &'static str,
    id: String,
    url: String,
    patterns: String,
    per_second: f64,
    burst: i32,
    enabled: bool,
    circuit: String,
    circuit_until: String,
    created_at: String,
    description: String,
    /// Header names only: values may be credentials.
    header_names: String,
    retry: String,
    filter: String,
    success: String,
    failures: i64,
    due: i64,
}

pub(super) async fn find(
    console: &Console,
    session: &Session,
    id: &str,
) -> Result<SubscriptionRow, ConsoleError> {
    SubscriptionId::parse(id).map_err(|e| ConsoleError::invalid("id", e.to_string()))?;
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    subscriptions::find_active(&mut conn, &session.tenant, id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("There is no subscription {id}.")))
}

pub async fn show(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let row = find(&console, &session, &id).await?;
    let stats = {
        let mut conn = dispatch_store::pool::connection(&console.pool).await?;
        recent(&mut conn).await?
    };
    let s = stats.iter().find(|s| s.id == row.id);
    let header_names = row
        .headers
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let retry = format!(
        "max attempts {}, max delay {}, timeout {}",
        row.max_attempts
            .map_or_else(|| "global".to_owned(), |n| n.to_string()),
        row.max_delay_secs
            .map_or_else(|| "global".to_owned(), |n| format!("{n} s")),
        row.timeout_ms
            .map_or_else(|| "global".to_owned(), |n| format!("{n} ms")),
    );
    Ok(html(
        StatusCode::OK,
        &ShowPage {
            title: format!("Subscription {}", row.id),
            csrf: session.csrf.clone(),
            nav: "subscriptions",
            url: row.url,
            patterns: row.event_types.join(", "),
            per_second: row.rate_limit_per_sec,
            burst: row.rate_limit_burst,
            enabled: row.enabled,
            circuit: row.circuit_state.replace('_', "-"),
            circuit_until: row.circuit_open_until.map(time).unwrap_or_default(),
            created_at: time(row.created_at),
            description: row.description.unwrap_or_default(),
            header_names,
            retry,
            filter: row.filter.unwrap_or_default(),
            success: s.map_or_else(|| rate(0, 0), |s| rate(s.attempts, s.failures)),
            failures: s.map_or(0, |s| s.failures),
            due: s.map_or(0, |s| s.due),
            id: row.id,
        },
    ))
}

/// Patterns as typed: separated by commas or white space.
fn patterns(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn number(fields: &Fields, name: &str) -> Result<Option<Value>, ConsoleError> {
    fields
        .get(name)
        .map(|text| {
            text.parse::<f64>()
                .ok()
                .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
                .ok_or_else(|| {
                    ConsoleError::invalid(name, format!("must be a number, got {text:?}"))
                })
        })
        .transpose()
}

/// The edit form as a merge patch: URL, patterns and rate limit.
pub(super) fn edit_patch(fields: &Fields) -> Result<Value, ConsoleError> {
    let mut patch = json!({});
    if let Some(url) = fields.get("url") {
        patch["url"] = json!(url);
    }
    if let Some(text) = fields.get("event_types") {
        patch["event_types"] = json!(patterns(text));
    }
    let mut limit = json!({});
    if let Some(n) = number(fields, "per_second")? {
        limit["per_second"] = n;
    }
    if let Some(n) = number(fields, "burst")? {
        limit["burst"] = n;
    }
    if limit.as_object().is_some_and(|m| !m.is_empty()) {
        patch["rate_limit"] = limit;
    }
    Ok(patch)
}

pub(super) async fn run(
    console: &Console,
    session: &Session,
    action: Action,
) -> Result<Value, ConsoleError> {
    console
        .actions
        .run(&session.tenant, action)
        .await
        .map_err(ConsoleError::Refused)
}

pub(super) fn page_of(id: &str) -> String {
    let query = serde_urlencoded::to_string([("", id)]).unwrap_or_default();
    format!("/console/subscriptions/{}", query.trim_start_matches('='))
}

/// `POST /console/subscriptions/{id}`: the edit form, pause, resume (field `do`).
pub async fn change(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    let id = id.into_inner();
    let patch = match fields.get("do") {
        Some("pause") => json!({"enabled": false}),
        Some("resume") => json!({"enabled": true}),
        Some("edit") => edit_patch(&fields)?,
        other => {
            return Err(ConsoleError::invalid(
                "do",
                format!("must be edit, pause or resume, got {other:?}"),
            ));
        }
    };
    run(
        &console,
        &session,
        Action::PatchSubscription {
            id: id.clone(),
            patch,
        },
    )
    .await?;
    Ok(super::see_other(&page_of(&id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edit_form_becomes_a_merge_patch_of_what_was_filled_in() {
        let f = Fields::parse("url=https%3A%2F%2Fa.example%2Fh&event_types=order.*%2C+user.created&per_second=5&burst=").expect("parses");
        assert_eq!(
            edit_patch(&f).expect("valid"),
            json!({"url": "https://a.example/h", "event_types": ["order.*", "user.created"],
                   "rate_limit": {"per_second": 5.0}})
        );
        let f = Fields::parse("per_second=fast").expect("parses");
        assert!(edit_patch(&f).is_err());
        assert_eq!(
            edit_patch(&Fields::parse("").expect("parses")).ok(),
            Some(json!({}))
        );
    }

    #[test]
    fn a_subscription_page_link_is_url_encoded() {
        assert_eq!(page_of("sub_1"), "/console/subscriptions/sub_1");
        assert_eq!(page_of("a:b"), "/console/subscriptions/a%3Ab");
    }
}
