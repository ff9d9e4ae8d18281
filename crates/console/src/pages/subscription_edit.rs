//! A subscription's edit form (URL, patterns, rate limit, headers, retry, timeout, filter,
//! description), pause and resume, as one `PATCH /subscriptions/{id}` merge patch run through
//! the API's own route code; a refused edit shows the form again, as typed, with the API's
//! message next to the field it names.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use dispatch_store::models::SubscriptionRow;
use serde_json::{Map, Value, json};

use super::subscriptions::{find, page_of, render};
use crate::Console;
use crate::actions::Action;
use crate::error::ConsoleError;
use crate::form::Fields;
use crate::session::Session;

/// What the edit form shows: the subscription's settings, or what was typed when the API
/// refused it. Header values are never shown (they may be credentials): only their names.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct EditForm {
    pub url: String,
    pub event_types: String,
    pub per_second: String,
    pub burst: String,
    pub description: String,
    pub max_attempts: String,
    pub max_delay_secs: String,
    pub timeout_ms: String,
    pub filter: String,
    /// Headers to add or replace, `Name: value` a line.
    pub set_headers: String,
    /// Header names ticked for removal.
    pub remove_headers: Vec<String>,
}

fn text_of<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

impl EditForm {
    pub fn of(row: &SubscriptionRow) -> Self {
        Self {
            url: row.url.clone(),
            event_types: row.event_types.join(", "),
            per_second: row.rate_limit_per_sec.to_string(),
            burst: row.rate_limit_burst.to_string(),
            description: row.description.clone().unwrap_or_default(),
            max_attempts: text_of(row.max_attempts),
            max_delay_secs: text_of(row.max_delay_secs),
            timeout_ms: text_of(row.timeout_ms),
            filter: row.filter.clone().unwrap_or_default(),
            set_headers: String::new(),
            remove_headers: Vec::new(),
        }
    }

    /// The form as it was submitted.
    fn typed(fields: &Fields) -> Self {
        let get = |name: &str| fields.get(name).unwrap_or_default().to_owned();
        Self {
            url: get("url"),
            event_types: get("event_types"),
            per_second: get("per_second"),
            burst: get("burst"),
            description: get("description"),
            max_attempts: get("max_attempts"),
            max_delay_secs: get("max_delay_secs"),
            timeout_ms: get("timeout_ms"),
            filter: get("filter"),
            set_headers: get("set_headers"),
            remove_headers: fields.all("remove_header").map(str::to_owned).collect(),
        }
    }
}

/// Why the API (or the form's own parsing) refused an edit: the field it names, as the API
/// names fields (`retry.max_attempts`, `headers.x-token`, …), and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub field: String,
    pub message: String,
}

impl Problem {
    /// Whether it is about the form field `name` (or a member of it).
    pub fn about(&self, name: &str) -> bool {
        self.field == name
            || self.field.starts_with(&format!("{name}."))
            || self.field.starts_with(&format!("{name}["))
    }
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

/// A whole-number setting as typed: a JSON integer when it is one, else the text itself, so
/// that the API's own check refuses it with its own message. Blank: `null` (the global setting).
fn setting(fields: &Fields, name: &str) -> Value {
    match fields.get(name) {
        None => Value::Null,
        Some(text) => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(text)),
    }
}

/// `Name: value` lines as a headers object; a line without a colon is refused.
fn header_lines(text: &str) -> Result<Map<String, Value>, ConsoleError> {
    let mut headers = Map::new();
    for (i, line) in text.lines().map(str::trim).enumerate() {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| {
            ConsoleError::invalid(
                "headers",
                format!("line {} must be Name: value, got {line:?}", i + 1),
            )
        })?;
        headers.insert(name.trim().to_owned(), Value::from(value.trim()));
    }
    Ok(headers)
}

/// The create and edit forms as a `POST /subscriptions` body or a merge patch. A blank field
/// is left out, except that, when `resets` (the edit form, which shows every setting), a
/// cleared description, retry setting, timeout or filter is `null`: back to the global setting
/// (none, for a filter). Fields the form does not have are left out either way.
pub(super) fn edit_patch(fields: &Fields, resets: bool) -> Result<Value, ConsoleError> {
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
    let given = |name: &str| fields.has(name) && (resets || fields.get(name).is_some());
    let text = |name: &str| fields.get(name).map_or(Value::Null, Value::from);
    for name in ["description", "filter"] {
        if given(name) {
            patch[name] = text(name);
        }
    }
    if given("timeout_ms") {
        patch["timeout_ms"] = setting(fields, "timeout_ms");
    }
    for name in ["max_attempts", "max_delay_secs"] {
        if given(name) {
            patch["retry"][name] = setting(fields, name);
        }
    }
    let mut headers = header_lines(fields.get("set_headers").unwrap_or_default())?;
    for name in fields.all("remove_header") {
        headers.entry(name.to_owned()).or_insert(Value::Null);
    }
    if !headers.is_empty() {
        patch["headers"] = Value::Object(headers);
    }
    Ok(patch)
}

/// `POST /console/subscriptions/{id}`: the edit form, pause, resume (field `do`); back to the
/// subscription's page, or to `back` (the list's resume buttons).
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
        Some("edit") => match edit_patch(&fields, true) {
            Ok(patch) => patch,
            Err(ConsoleError::Invalid { field, message }) => {
                return refused(&session, &console, &id, &fields, field, message, 422).await;
            }
            Err(e) => return Err(e),
        },
        other => {
            return Err(ConsoleError::invalid(
                "do",
                format!("must be edit, pause or resume, got {other:?}"),
            ));
        }
    };
    let action = Action::PatchSubscription {
        id: id.clone(),
        patch,
    };
    match session.run(&console, action).await {
        Ok(_) => Ok(super::see_other(&super::deliveries::back(
            &fields,
            &page_of(&id),
        ))),
        // A refused value (422) is shown next to the form; anything else (403, 404, …) is not
        // about the form, and gets the error page.
        Err(ConsoleError::Refused(r)) if fields.get("do") == Some("edit") && r.status == 422 => {
            let field = r.field.unwrap_or_else(|| "form".to_owned());
            refused(&session, &console, &id, &fields, field, r.message, r.status).await
        }
        Err(e) => Err(e),
    }
}

/// The subscription's page again, its edit form as typed and the problem next to it.
async fn refused(
    session: &Session,
    console: &Console,
    id: &str,
    fields: &Fields,
    field: String,
    message: String,
    status: u16,
) -> Result<HttpResponse, ConsoleError> {
    let row = find(console, session, id).await?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let problem = Problem { field, message };
    render(
        session,
        console,
        row,
        Some(EditForm::typed(fields)),
        Some(problem),
        status,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_form_becomes_a_body_of_what_was_filled_in() {
        let f = Fields::parse("url=https%3A%2F%2Fa.example%2Fh&event_types=order.*%2C+user.created&per_second=5&burst=&description=").expect("parses");
        assert_eq!(
            edit_patch(&f, false).expect("valid"),
            json!({"url": "https://a.example/h", "event_types": ["order.*", "user.created"],
                   "rate_limit": {"per_second": 5.0}})
        );
        let f = Fields::parse("per_second=fast").expect("parses");
        assert!(edit_patch(&f, false).is_err());
        assert_eq!(
            edit_patch(&Fields::parse("").expect("parses"), false).ok(),
            Some(json!({}))
        );
    }

    #[test]
    fn the_edit_form_resets_cleared_settings_and_passes_bad_numbers_to_the_api() {
        let f = Fields::parse(
            "description=&max_attempts=5&max_delay_secs=&timeout_ms=soon&filter=%24.a+%3E+1\
             &set_headers=X-Token%3A+t0k%0D%0A%0D%0AX-Env%3A+prod&remove_header=x-old",
        )
        .expect("parses");
        assert_eq!(
            edit_patch(&f, true).expect("valid"),
            json!({"description": null, "filter": "$.a > 1", "timeout_ms": "soon",
                   "retry": {"max_attempts": 5, "max_delay_secs": null},
                   "headers": {"X-Token": "t0k", "X-Env": "prod", "x-old": null}})
        );
        let f = Fields::parse("set_headers=no+colon+here").expect("parses");
        match edit_patch(&f, true) {
            Err(ConsoleError::Invalid { field, message }) => {
                assert_eq!(field, "headers");
                assert!(message.contains("line 1"), "{message}");
            }
            other => panic!("refused, got {other:?}"),
        }
    }

    #[test]
    fn a_problem_is_shown_next_to_the_field_it_names() {
        let p = Problem {
            field: "retry.max_attempts".to_owned(),
            message: "must be at least 1".to_owned(),
        };
        assert!(p.about("retry") && p.about("retry.max_attempts"));
        assert!(!p.about("retry.max_delay_secs") && !p.about("ret"));
    }
}
