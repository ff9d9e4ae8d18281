//! The overview: the last hour per minute (ingested, delivered, failed), the backlog, open
//! circuits and the subscriptions failing most; htmx refreshes it every five seconds. It reads
//! the parts of `GET /stats`'s snapshot that cost nothing however long the history is (the
//! backlog, the recent attempts and each subscription's share: `ops::stats`'s own functions),
//! unfinished and failed deliveries from their small tables, and the per-minute counts.

use dispatch_domain::tenant::{external_id, tenant_of};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use askama::Template;
use dispatch_store::queries::{console as queries, ops};

use crate::Console;
use crate::chart::{Chart, chart};
use crate::error::{ConsoleError, html};
use crate::session::Session;

/// How many subscriptions the "failing most" table lists.
const TOP_FAILING: usize = 5;

struct Failing {
    id: String,
    attempts: i64,
    failures: i64,
    due: i64,
}

struct Circuit {
    id: String,
    state: String,
    until: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    now: String,
    /// Label, chart and CSS class of each series.
    charts: Vec<(&'static str, Chart, &'static str)>,
    due: i64,
    oldest_due: String,
    by_status: Vec<(&'static str, i64)>,
    circuits: Vec<Circuit>,
    failing: Vec<Failing>,
    failure_rate: String,
    /// The installation-wide figures (charts, backlog, statuses) are shown to keys of every
    /// tenant (admin, read) only; a tenant key sees its own subscriptions' lists.
    whole: bool,
}

/// `90` → `1 min 30 s`: an age an operator reads at a glance.
pub fn age(secs: f64) -> String {
    let secs = secs.max(0.0).round() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
    }
}

pub async fn page(
    session: Session,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    let window = Duration::from_secs(3600);
    let backlog = dispatch_store::queries::deliveries::backlog(&mut conn).await?;
    let floor = ops::recent_floor(&mut conn, window).await?;
    let (attempts, failed_attempts) = ops::recent_attempts(&mut conn, window, floor).await?;
    let subscriptions = ops::subscription_stats(&mut conn, window, floor).await?;
    let open = queries::open_counts(&mut conn).await?;
    let minutes = queries::activity(&mut conn, 59).await?;
    drop(conn);
    let series = |f: fn(&queries::Minute) -> i64| chart(&minutes.iter().map(f).collect::<Vec<_>>());
    // Only the session's tenant's subscriptions, named as that tenant knows them.
    let subscriptions: Vec<_> = subscriptions
        .into_iter()
        .filter(|s| tenant_of(&s.id) == session.tenant.as_str())
        .collect();
    let whole = session.signer.scope.tenant().is_none();
    let mut failing: Vec<Failing> = subscriptions
        .iter()
        .filter(|s| s.failures > 0)
        .map(|s| Failing {
            id: external_id(&s.id).to_owned(),
            attempts: s.attempts,
            failures: s.failures,
            due: s.due,
        })
        .collect();
    failing.sort_by(|a, b| b.failures.cmp(&a.failures).then_with(|| a.id.cmp(&b.id)));
    failing.truncate(TOP_FAILING);
    let circuits = subscriptions
        .iter()
        .filter(|s| s.circuit_state != "closed")
        .map(|s| Circuit {
            id: external_id(&s.id).to_owned(),
            state: s.circuit_state.replace('_', "-"),
            until: s
                .circuit_open_until
                .map(|t| t.format("%H:%M:%S UTC").to_string())
                .unwrap_or_default(),
        })
        .collect();
    Ok(html(
        StatusCode::OK,
        &OverviewPage {
            title: "Overview",
            csrf: session.csrf.clone(),
            nav: "overview",
            now: chrono::Utc::now().format("%H:%M:%S UTC").to_string(),
            charts: vec![
                ("Ingested events", series(|m| m.ingested), "ingested"),
                ("Delivered attempts", series(|m| m.delivered), "delivered"),
                ("Failed attempts", series(|m| m.failed), "failed"),
            ],
            due: backlog.due,
            oldest_due: age(backlog.oldest_due_age_secs),
            by_status: open.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
            circuits,
            failing,
            failure_rate: if attempts > 0 {
                format!("{:.1} %", failed_attempts as f64 * 100.0 / attempts as f64)
            } else {
                "no attempts".to_owned()
            },
            whole,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(0.2), "0 s");
        assert_eq!(age(90.0), "1 min 30 s");
        assert_eq!(age(7260.0), "2 h 1 min");
        assert_eq!(age(-3.0), "0 s");
    }
}
