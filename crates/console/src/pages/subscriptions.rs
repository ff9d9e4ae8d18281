//! Subscriptions: the list with state (paused, or disabled by Dispatch), circuit and the last
//! hour's success rate, and one subscription's page with its settings, auto-disable state and
//! forms; `subscription_edit.rs` runs the edit, pause and resume, `subscription_actions.rs` the
//! rest, all through the API's own route code.

use dispatch_domain::tenant::external_id;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use dispatch_domain::SubscriptionId;
use dispatch_store::models::SubscriptionRow;
use dispatch_store::queries::{ops, subscriptions};

use super::events::time;
use super::subscription_edit::{EditForm, Problem};
use crate::Console;
use crate::access::Can;
use crate::error::{ConsoleError, html};
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

/// `active`, `paused` (by an operator) or `disabled` (by Dispatch's auto-disable).
fn state_of(row: &SubscriptionRow) -> &'static str {
    match (row.enabled, &row.disabled_reason) {
        (true, _) => "active",
        (false, Some(_)) => "disabled",
        (false, None) => "paused",
    }
}

struct Line {
    id: String,
    url: String,
    patterns: String,
    state: &'static str,
    /// Why Dispatch disabled it (empty unless `disabled`).
    disabled_reason: String,
    /// When its current run of failed attempts began (empty: healthy).
    failing_since: String,
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
    can: Can,
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
                url: row.url.clone(),
                patterns: row.event_types.join(", "),
                state: state_of(&row),
                disabled_reason: row.disabled_reason.clone().unwrap_or_default(),
                failing_since: row.failing_since.map(time).unwrap_or_default(),
                circuit: row.circuit_state.replace('_', "-"),
                success: s.map_or_else(|| rate(0, 0), |s| rate(s.attempts, s.failures)),
                due: s.map_or(0, |s| s.due),
                id: external_id(&row.id).to_owned(),
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
            can: session.can,
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
    state: &'static str,
    disabled_reason: String,
    disabled_at: String,
    failing_since: String,
    circuit: String,
    circuit_until: String,
    created_at: String,
    description: String,
    /// Header names only: values may be credentials.
    header_names: Vec<String>,
    retry: String,
    filter: String,
    success: String,
    failures: i64,
    due: i64,
    /// What the edit form holds.
    form: EditForm,
    /// Why the last edit was refused.
    problem: Option<Problem>,
    can: Can,
}

impl ShowPage {
    /// The problem's message when it is about the form field `name`.
    fn problem_at(&self, name: &str) -> Option<&str> {
        self.problem
            .as_ref()
            .filter(|p| p.about(name))
            .map(|p| p.message.as_str())
    }

    /// Whether the header `name` is ticked for removal in the form.
    fn removing(&self, name: &str) -> bool {
        self.form.remove_headers.iter().any(|h| h == name)
    }
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
    render(&session, &console, row, None, None, StatusCode::OK).await
}

/// A subscription's page: its edit form holds `form` (else its settings), with `problem`.
pub(super) async fn render(
    session: &Session,
    console: &Console,
    row: SubscriptionRow,
    form: Option<EditForm>,
    problem: Option<Problem>,
    status: StatusCode,
) -> Result<HttpResponse, ConsoleError> {
    let stats = {
        let mut conn = dispatch_store::pool::connection(&console.pool).await?;
        recent(&mut conn).await?
    };
    let s = stats.iter().find(|s| s.id == row.id);
    let header_names = row
        .headers
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>())
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
    let form = form.unwrap_or_else(|| EditForm::of(&row));
    Ok(html(
        status,
        &ShowPage {
            title: format!("Subscription {}", external_id(&row.id)),
            csrf: session.csrf.clone(),
            nav: "subscriptions",
            state: state_of(&row),
            disabled_reason: row.disabled_reason.unwrap_or_default(),
            disabled_at: row.disabled_at.map(time).unwrap_or_default(),
            failing_since: row.failing_since.map(time).unwrap_or_default(),
            url: row.url,
            patterns: row.event_types.join(", "),
            per_second: row.rate_limit_per_sec,
            burst: row.rate_limit_burst,
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
            form,
            problem,
            can: session.can,
            id: external_id(&row.id).to_owned(),
        },
    ))
}

pub(super) fn page_of(id: &str) -> String {
    let query = serde_urlencoded::to_string([("", id)]).unwrap_or_default();
    format!("/console/subscriptions/{}", query.trim_start_matches('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_page_link_is_url_encoded() {
        assert_eq!(page_of("sub_1"), "/console/subscriptions/sub_1");
        assert_eq!(page_of("a:b"), "/console/subscriptions/a%3Ab");
    }
}
