//! Events: the filtered list (keyset pages, filters in the query string so a link can be pasted
//! into an incident channel) and one event's page with its payload, deliveries and attempts.
//! The list is `listing::events`, as `GET /events`; the page reads what `GET /events/{id}` and
//! `GET /events/{id}/attempts` read.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::{DateTime, Utc};
use dispatch_domain::tenant::external_id;
use dispatch_domain::{DeliveryStatus, EventId, Pattern, Source, SubscriptionId};
use dispatch_store::queries::events;
use dispatch_store::queries::listing::{self, AttemptsOf, EventCursor, EventFilter};

use crate::Console;
use crate::error::{ConsoleError, html};
use crate::form::Fields;
use crate::session::Session;

/// Events per page.
const PAGE: i64 = 50;
/// Attempts an event's page lists (the JSON API pages through more).
const ATTEMPTS: i64 = 250;
/// A payload longer than this (pretty-printed) starts collapsed.
const COLLAPSE_BYTES: usize = 2048;
/// How much of a response body an attempt row shows.
const EXCERPT_CHARS: usize = 200;

pub(super) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// An RFC 3339 time from a filter field.
pub(super) fn parse_time(
    fields: &Fields,
    name: &str,
) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    fields
        .get(name)
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ConsoleError::invalid(
                        name,
                        format!("must be an RFC 3339 time such as 2026-12-01T08:00:00Z ({e})"),
                    )
                })
        })
        .transpose()
}

pub(super) fn parse_status(text: &str) -> Result<DeliveryStatus, ConsoleError> {
    text.parse::<DeliveryStatus>().map_err(|_| {
        ConsoleError::invalid(
            "status",
            format!(
                "must be one of {}, got {text:?}",
                DeliveryStatus::ALL.map(DeliveryStatus::as_str).join(", ")
            ),
        )
    })
}

/// An id filter, checked as the API checks ids (else nothing could match).
pub(super) fn parse_id<T>(
    fields: &Fields,
    name: &str,
    parse: impl Fn(&str) -> Result<T, dispatch_domain::ParseError>,
) -> Result<Option<String>, ConsoleError> {
    fields
        .get(name)
        .map(|text| {
            parse(text)
                .map(|_| text.to_owned())
                .map_err(|e| ConsoleError::invalid(name, e.to_string()))
        })
        .transpose()
}

/// The filter form's values, as given (shown back in the form and kept in the next page's link).
#[derive(Default)]
struct Shown {
    event_type: String,
    source: String,
    status: String,
    subscription_id: String,
    received_after: String,
    received_before: String,
}

fn filter_of(fields: &Fields) -> Result<(EventFilter, Shown), ConsoleError> {
    let mut filter = EventFilter::default();
    if let Some(text) = fields.get("type") {
        let pattern =
            Pattern::parse(text).map_err(|e| ConsoleError::invalid("type", e.to_string()))?;
        filter.select_type(&pattern);
    }
    filter.source = parse_id(fields, "source", Source::parse)?;
    filter.status = fields.get("status").map(parse_status).transpose()?;
    filter.subscription_id = parse_id(fields, "subscription_id", SubscriptionId::parse)?;
    filter.received_after = parse_time(fields, "received_after")?;
    filter.received_before = parse_time(fields, "received_before")?;
    if let (Some(a), Some(b)) = (filter.received_after, filter.received_before)
        && a >= b
    {
        return Err(ConsoleError::invalid(
            "received_before",
            "must be later than received_after",
        ));
    }
    let shown = |name| fields.get(name).unwrap_or_default().to_owned();
    Ok((
        filter,
        Shown {
            event_type: shown("type"),
            source: shown("source"),
            status: shown("status"),
            subscription_id: shown("subscription_id"),
            received_after: shown("received_after"),
            received_before: shown("received_before"),
        },
    ))
}

struct Row {
    id: String,
    event_type: String,
    source: String,
    status: String,
    received_at: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    shown: Shown,
    statuses: Vec<&'static str>,
    rows: Vec<Row>,
    /// The next page's query string, when there is one.
    next: Option<String>,
    /// Links that set `received_after` to a recent time (label, query string).
    windows: Vec<(&'static str, String)>,
}

impl EventsPage {
    /// The current filters as a query string, with `received_after` replaced when given.
    fn query(&self, received_after: Option<&str>, cursor: Option<&str>) -> String {
        let s = &self.shown;
        let pairs = [
            ("type", s.event_type.as_str()),
            ("source", s.source.as_str()),
            ("status", s.status.as_str()),
            ("subscription_id", s.subscription_id.as_str()),
            (
                "received_after",
                received_after.unwrap_or(&s.received_after),
            ),
            ("received_before", s.received_before.as_str()),
            ("cursor", cursor.unwrap_or_default()),
        ];
        serde_urlencoded::to_string(
            pairs
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default()
    }
}

pub async fn list(
    session: Session,
    req: HttpRequest,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::parse(req.query_string())?;
    let (filter, shown) = filter_of(&fields)?;
    let cursor = fields
        .get("cursor")
        .map(|text| {
            EventCursor::parse(text)
                .ok_or_else(|| ConsoleError::invalid("cursor", "is not a link this console made"))
        })
        .transpose()?;
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    let mut items = listing::events(
        &mut conn,
        &session.tenant,
        &filter,
        false,
        cursor.as_ref(),
        PAGE + 1,
    )
    .await?;
    drop(conn);
    let more = items.len() as i64 > PAGE;
    items.truncate(PAGE as usize);
    let next_cursor = more
        .then(|| {
            items
                .last()
                .map(|e| EventCursor::after(e.received_at, external_id(&e.id)).text())
        })
        .flatten();
    let now = Utc::now();
    let mut page = EventsPage {
        title: "Events",
        csrf: session.csrf.clone(),
        nav: "events",
        shown,
        statuses: DeliveryStatus::ALL.map(DeliveryStatus::as_str).to_vec(),
        rows: items
            .into_iter()
            .map(|e| Row {
                id: external_id(&e.id).to_owned(),
                event_type: e.event_type,
                source: e.source,
                status: e.status,
                received_at: time(e.received_at),
            })
            .collect(),
        next: None,
        windows: Vec::new(),
    };
    page.next = next_cursor.map(|c| page.query(None, Some(&c)));
    page.windows = [
        ("last 15 minutes", chrono::Duration::minutes(15)),
        ("last hour", chrono::Duration::hours(1)),
        ("last day", chrono::Duration::days(1)),
    ]
    .into_iter()
    .map(|(label, d)| {
        let after = (now - d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        (label, page.query(Some(&after), None))
    })
    .collect();
    Ok(html(StatusCode::OK, &page))
}

struct DeliveryLine {
    id: i64,
    subscription_id: String,
    status: String,
    attempts: i32,
    next_attempt_at: String,
    last_error: String,
    retryable: bool,
}

struct AttemptLine {
    delivery_id: i64,
    attempt: i32,
    at: String,
    status_code: String,
    failure: String,
    latency_ms: i32,
    excerpt: String,
    error: String,
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    title: String,
    csrf: String,
    nav: &'static str,
    id: String,
    event_type: String,
    source: String,
    received_at: String,
    status: String,
    payload: String,
    collapsed: bool,
    payload_bytes: usize,
    deliveries: Vec<DeliveryLine>,
    attempts: Vec<AttemptLine>,
    more_attempts: bool,
    can: crate::access::Can,
}

fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

pub async fn show(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let id = id.into_inner();
    EventId::parse(&id).map_err(|e| ConsoleError::invalid("id", e.to_string()))?;
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    let event = events::find(&mut conn, &session.tenant, &id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("There is no event {id}.")))?;
    let deliveries = events::deliveries_of(&mut conn, &session.tenant, &id).await?;
    let mut attempts = listing::attempts(
        &mut conn,
        &session.tenant,
        AttemptsOf::Event(&id),
        None,
        ATTEMPTS + 1,
    )
    .await?;
    drop(conn);
    let more_attempts = attempts.len() as i64 > ATTEMPTS;
    attempts.truncate(ATTEMPTS as usize);
    let statuses = deliveries
        .iter()
        .map(|d| d.status())
        .collect::<Result<Vec<_>, _>>()?;
    let status = dispatch_domain::summarise_event_status(statuses.iter().copied());
    let payload = serde_json::to_string_pretty(&event.data)
        .map_err(|e| ConsoleError::Internal(format!("payload: {e}")))?;
    Ok(html(
        StatusCode::OK,
        &EventPage {
            title: format!("Event {id}"),
            csrf: session.csrf.clone(),
            nav: "events",
            can: session.can,
            collapsed: payload.len() > COLLAPSE_BYTES,
            payload_bytes: payload.len(),
            payload,
            id: external_id(&event.id).to_owned(),
            event_type: event.event_type,
            source: event.source,
            received_at: time(event.received_at),
            status: status.as_str().to_owned(),
            deliveries: deliveries
                .into_iter()
                .zip(statuses)
                .map(|(d, s)| DeliveryLine {
                    id: d.id,
                    subscription_id: external_id(&d.subscription_id).to_owned(),
                    status: d.status,
                    attempts: d.attempts,
                    next_attempt_at: time(d.next_attempt_at),
                    last_error: d.last_error.unwrap_or_default(),
                    retryable: s == DeliveryStatus::Failed,
                })
                .collect(),
            attempts: attempts
                .into_iter()
                .map(|a| AttemptLine {
                    delivery_id: a.delivery_id,
                    attempt: a.attempt,
                    at: time(a.created_at),
                    status_code: a.status_code.map(|c| c.to_string()).unwrap_or_default(),
                    failure: a.error_code.unwrap_or_default(),
                    latency_ms: a.latency_ms,
                    excerpt: excerpt(a.response_body.as_deref().unwrap_or_default()),
                    error: a.error.unwrap_or_default(),
                })
                .collect(),
            more_attempts,
        },
    ))
}
