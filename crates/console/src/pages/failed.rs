//! Failed deliveries: the filtered list (`listing::deliveries`, as `GET /deliveries?status=
//! failed`) with retry of the selected ones, and the replay wizard — filter, dry-run count,
//! confirm, progress — over `POST /replays` and the stored replay's row.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use dispatch_domain::tenant::external_id;
use dispatch_domain::{DeliveryStatus, EventId, ReplayId, SubscriptionId};
use dispatch_store::queries::listing::{self, DeliveryFilter};
use dispatch_store::queries::replays;
use serde_json::{Value, json};

use super::events::{parse_id, parse_time, time};
use crate::Console;
use crate::access::Can;
use crate::actions::Action;
use crate::error::{ConsoleError, html};
use crate::form::Fields;
use crate::session::Session;

/// Deliveries per page.
const PAGE: i64 = 100;
/// Most deliveries one "retry selected" takes (a replay is for more).
const MAX_SELECTED: usize = PAGE as usize;

struct Row {
    id: i64,
    event_id: String,
    subscription_id: String,
    attempts: i32,
    last_status: String,
    failure: String,
    last_error: String,
    failed_at: String,
}

#[derive(Template)]
#[template(path = "failed.html")]
struct FailedPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    subscription_id: String,
    event_id: String,
    rows: Vec<Row>,
    next: Option<String>,
    /// This page's address, to come back to after a retry.
    here: String,
    can: Can,
}

fn query_of(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default()
}

pub async fn list(
    session: Session,
    req: HttpRequest,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::parse(req.query_string())?;
    let subscription_id = parse_id(&fields, "subscription_id", SubscriptionId::parse)?;
    let event_id = parse_id(&fields, "event_id", EventId::parse)?;
    let cursor = fields
        .get("cursor")
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConsoleError::invalid("cursor", "is not a link this console made"))
        })
        .transpose()?;
    let filter = DeliveryFilter {
        statuses: vec![DeliveryStatus::Failed],
        subscription_id: subscription_id.clone(),
        event_id: event_id.clone(),
        ..DeliveryFilter::default()
    };
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    let mut items =
        listing::deliveries(&mut conn, &session.tenant, &filter, cursor, PAGE + 1).await?;
    drop(conn);
    let more = items.len() as i64 > PAGE;
    items.truncate(PAGE as usize);
    let (subscription_id, event_id) = (
        subscription_id.unwrap_or_default(),
        event_id.unwrap_or_default(),
    );
    let next = more
        .then(|| items.last().map(|d| d.id.to_string()))
        .flatten()
        .map(|c| {
            query_of(&[
                ("subscription_id", &subscription_id),
                ("event_id", &event_id),
                ("cursor", &c),
            ])
        });
    let here = format!(
        "/console/failed?{}",
        query_of(&[
            ("subscription_id", &subscription_id),
            ("event_id", &event_id),
            ("cursor", fields.get("cursor").unwrap_or_default()),
        ])
    );
    Ok(html(
        StatusCode::OK,
        &FailedPage {
            title: "Failed deliveries",
            csrf: session.csrf.clone(),
            nav: "failed",
            rows: items
                .into_iter()
                .map(|d| Row {
                    id: d.id,
                    event_id: external_id(&d.event_id).to_owned(),
                    subscription_id: external_id(&d.subscription_id).to_owned(),
                    attempts: d.attempts,
                    last_status: d
                        .last_status_code
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    failure: d.last_error_code.unwrap_or_default(),
                    last_error: d.last_error.unwrap_or_default(),
                    failed_at: time(d.updated_at),
                })
                .collect(),
            subscription_id,
            event_id,
            next,
            here,
            can: session.can,
        },
    ))
}

/// `POST /console/failed/retry`: each selected delivery, as `POST /deliveries/{id}/retry`.
pub async fn retry_selected(
    session: Session,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    let ids = fields
        .all("delivery")
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ConsoleError::invalid("delivery", format!("{text:?} is not a delivery id"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.is_empty() {
        return Err(ConsoleError::invalid(
            "delivery",
            "select at least one delivery",
        ));
    }
    if ids.len() > MAX_SELECTED {
        return Err(ConsoleError::invalid(
            "delivery",
            format!("at most {MAX_SELECTED} at once; replay more with the replay wizard"),
        ));
    }
    for id in ids {
        session.run(&console, Action::RetryDelivery { id }).await?;
    }
    Ok(super::see_other(&super::deliveries::back(
        &fields,
        "/console/failed",
    )))
}

/// The wizard's selector, from its form or query string.
struct Selector {
    subscription_id: String,
    event_id: String,
    since: String,
    until: String,
}

impl Selector {
    fn of(fields: &Fields) -> Result<Self, ConsoleError> {
        // Checked here for a clear message on the form; the API checks them again.
        parse_id(fields, "subscription_id", SubscriptionId::parse)?;
        parse_id(fields, "event_id", EventId::parse)?;
        parse_time(fields, "since")?;
        parse_time(fields, "until")?;
        let get = |name| fields.get(name).unwrap_or_default().to_owned();
        Ok(Self {
            subscription_id: get("subscription_id"),
            event_id: get("event_id"),
            since: get("since"),
            until: get("until"),
        })
    }

    fn is_empty(&self) -> bool {
        self.subscription_id.is_empty() && self.event_id.is_empty() && self.since.is_empty()
    }

    /// The `POST /replays` body.
    fn body(&self, dry_run: bool) -> Value {
        let mut body = json!({"dry_run": dry_run});
        for (name, value) in [
            ("subscription_id", &self.subscription_id),
            ("event_id", &self.event_id),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !value.is_empty() {
                body[name] = json!(value);
            }
        }
        body
    }
}

#[derive(Template)]
#[template(path = "replay_new.html")]
struct WizardPage {
    title: &'static str,
    csrf: String,
    nav: &'static str,
    selector: Selector,
    /// The dry run's count, once a selector is given.
    matched: Option<i64>,
    can: Can,
}

/// `GET /console/replays/new`: step 1 (the filter) and, once given, step 2 (the dry-run count
/// and the confirmation form).
pub async fn wizard(
    session: Session,
    req: HttpRequest,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::parse(req.query_string())?;
    let selector = Selector::of(&fields)?;
    // The count is `POST /replays` with `dry_run`: a key that may not replay does not get it.
    let matched = if selector.is_empty() || !session.can.replay {
        None
    } else {
        let answer = session
            .run(&console, Action::CreateReplay(selector.body(true)))
            .await?;
        Some(answer.get("matched").and_then(Value::as_i64).unwrap_or(0))
    };
    Ok(html(
        StatusCode::OK,
        &WizardPage {
            title: "Replay failed deliveries",
            csrf: session.csrf.clone(),
            nav: "failed",
            selector,
            matched,
            can: session.can,
        },
    ))
}

/// `POST /console/replays`: step 3, the confirmed replay; then its progress page.
pub async fn start(
    session: Session,
    console: web::Data<Console>,
    body: web::Bytes,
) -> Result<HttpResponse, ConsoleError> {
    let fields = Fields::from_bytes(&body)?;
    session.check_csrf(fields.get("csrf"))?;
    let selector = Selector::of(&fields)?;
    let answer = session
        .run(&console, Action::CreateReplay(selector.body(false)))
        .await?;
    let id = answer
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ConsoleError::Internal("the replay has no id".to_owned()))?;
    Ok(super::see_other(&format!("/console/replays/{id}")))
}

#[derive(Template)]
#[template(path = "replay.html")]
struct ProgressPage {
    title: String,
    csrf: String,
    nav: &'static str,
    id: String,
    state: String,
    matched: i64,
    requeued: i64,
    percent: i64,
    selector: String,
    created_at: String,
    finished_at: String,
    running: bool,
    /// Where the replayed deliveries can be watched.
    watch: String,
}

/// `GET /console/replays/{id}`: step 4, the progress (refreshed every 2 s while running).
pub async fn progress(
    session: Session,
    id: web::Path<String>,
    console: web::Data<Console>,
) -> Result<HttpResponse, ConsoleError> {
    ReplayId::parse(&id).map_err(|e| ConsoleError::invalid("id", e.to_string()))?;
    let mut conn = dispatch_store::pool::connection(&console.pool).await?;
    let row = replays::find(&mut conn, &session.tenant, &id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("There is no replay {id}.")))?;
    drop(conn);
    let mut selector = Vec::new();
    if let Some(s) = &row.subscription_id {
        selector.push(format!("subscription {s}"));
    }
    if let Some(e) = &row.event_id {
        selector.push(format!("event {e}"));
    }
    if let Some(t) = row.since {
        selector.push(format!("since {}", time(t)));
    }
    if let Some(t) = row.until {
        selector.push(format!("until {}", time(t)));
    }
    let watch = match (&row.subscription_id, &row.event_id) {
        (Some(s), _) => format!("/console/events?{}", query_of(&[("subscription_id", s)])),
        (None, Some(e)) => format!("/console/events/{e}"),
        _ => "/console/events".to_owned(),
    };
    Ok(html(
        StatusCode::OK,
        &ProgressPage {
            title: format!("Replay {}", row.id),
            csrf: session.csrf.clone(),
            nav: "failed",
            percent: if row.matched > 0 {
                (row.requeued * 100 / row.matched).min(100)
            } else {
                100
            },
            running: row.state == "running",
            state: row.state,
            matched: row.matched,
            requeued: row.requeued,
            selector: selector.join(", "),
            created_at: time(row.created_at),
            finished_at: row.finished_at.map(time).unwrap_or_default(),
            watch,
            id: row.id,
        },
    ))
}
