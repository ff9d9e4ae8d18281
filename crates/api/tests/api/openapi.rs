//! The OpenAPI document: served at `/openapi.json`, checked in as `docs/openapi.json`, and in
//! step with the routes the server really has and the JSON it really answers.

use std::collections::BTreeSet;

use dispatch_api::routes::ROUTES;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, event, json_of};

mod conformance;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
const REGENERATE: &str = "regenerate it with `cargo xtask openapi` \
    (or `cargo run -p dispatch-api -- openapi > docs/openapi.json`)";

async fn served_document(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    let content_type = media_type(&response);
    let (status, document) = json_of(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    document
}

/// The media type of a response, without parameters, lower-cased.
fn media_type(response: &Response) -> String {
    let value = response
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    essence(value)
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Every `(METHOD, path)` the document describes.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item is an object")
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

fn operation<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &document["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// Follows a `$ref` to `#/components/schemas/…` (any other schema is returned as it is).
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
            let target = &document["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {reference}");
            resolve(document, target)
        }
        None => schema,
    }
}

/// The documented answer `status` to `method path` (`Value::Null` when there is none), a
/// shared one followed from `#/components/responses/…`.
fn documented_response<'a>(
    document: &'a Value,
    method: &str,
    path: &str,
    status: &str,
) -> &'a Value {
    let response = &operation(document, method, path)["responses"][status];
    let Some(reference) = response.get("$ref").and_then(Value::as_str) else {
        return response;
    };
    let name = reference
        .strip_prefix("#/components/responses/")
        .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
    let target = &document["components"]["responses"][name];
    assert!(target.is_object(), "dangling $ref {reference}");
    target
}

/// The documented JSON schema of the answer `status` to `method path`.
fn response_schema<'a>(document: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    let response = documented_response(document, method, path, &status.to_string());
    assert!(
        response.is_object(),
        "{method} {path} does not document a {status} answer"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status} documents no JSON body"
    );
    resolve(document, schema)
}

// --- The document is up to date ---------------------------------------------------------------

#[tokio::test]
async fn the_served_document_is_the_checked_in_docs_openapi_json() {
    let app = TestApp::spawn().await;
    let served = served_document(&app).await;
    let text = std::fs::read_to_string(CHECKED_IN)
        .unwrap_or_else(|e| panic!("docs/openapi.json cannot be read ({e}); {REGENERATE}"));
    let checked_in: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("docs/openapi.json is not JSON ({e}); {REGENERATE}"));
    assert!(
        served == checked_in,
        "docs/openapi.json differs from the document the API serves; {REGENERATE}"
    );
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(
        text,
        dispatch_api::openapi::pretty_json(),
        "docs/openapi.json is not in the generated (pretty-printed) form; {REGENERATE}"
    );
}

// --- The document and the routes agree ---------------------------------------------------------

#[tokio::test]
async fn the_document_describes_exactly_the_routes_the_app_is_built_from() {
    let app = TestApp::spawn().await;
    let documented = operations(&served_document(&app).await);
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes served but not in the OpenAPI document (add #[utoipa::path] and list the \
         handler in openapi::ApiDoc): {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "operations documented but not in routes::ROUTES: {unrouted:?}"
    );
}

/// Requests every documented operation (ids in paths filled in, `{}` as the body of a POST) and
/// checks the server routes it: no "no such route" 404 and no 405, an answer the operation
/// documents, in a documented media type. Every method the document does not list on a path
/// must answer 405, with an `Allow` header naming the documented ones.
#[tokio::test]
async fn every_documented_operation_is_served_and_every_other_method_is_405() {
    let app = TestApp::spawn().await;
    let document = served_document(&app).await;
    for (method, path) in operations(&document) {
        let url = app.url(&path.replace("{id}", "drift_probe"));
        let mut request = app.client.request(
            Method::from_bytes(method.as_bytes()).expect("a method"),
            url,
        );
        if method == "POST" {
            request = request
                .header("Content-Type", "application/json")
                .body("{}");
        }
        let response = request.send().await.expect("answered");
        let status = response.status();
        let content_type = media_type(&response);
        let body = response.text().await.expect("a body");
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but answers 405"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && body.contains("no such route")),
            "{method} {path} is documented but is no route: {body}"
        );
        let documented = documented_response(&document, &method, &path, status.as_str());
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which it does not document: {body}"
        );
        if let Some(content) = documented.get("content").and_then(Value::as_object) {
            let types: Vec<String> = content.keys().map(|k| essence(k)).collect();
            assert!(
                types.contains(&content_type),
                "{method} {path} {status} answered {content_type:?}, documented {types:?}"
            );
        }
    }

    let paths: BTreeSet<String> = operations(&document).into_iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if document["paths"][&path][method.as_str().to_ascii_lowercase()].is_object() {
                continue;
            }
            let url = app.url(&path.replace("{id}", "drift_probe"));
            let response = app
                .client
                .request(method.clone(), url)
                .send()
                .await
                .expect("answered");
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented"
            );
            let allow = response
                .headers()
                .get("Allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("{method} {path}: a 405 names the allowed methods"));
            let allowed: BTreeSet<String> = allow
                .split(',')
                .map(|m| m.trim().to_ascii_lowercase())
                .collect();
            let documented: BTreeSet<String> = document["paths"][&path]
                .as_object()
                .expect("a path item")
                .keys()
                .cloned()
                .collect();
            assert_eq!(allowed, documented, "Allow of {path}");
        }
    }
}
