//! The SSRF check at subscription creation: destinations that are, or resolve to, addresses
//! webhooks may not reach are refused before anything is stored.

use dispatch_domain::destination::DestinationPolicy;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of};

/// An API with no allowed ranges: the production default.
async fn guarded() -> TestApp {
    TestApp::spawn_with(|s| s.destinations = DestinationPolicy::default()).await
}

fn subscription(url: &str) -> Value {
    json!({"url": url, "event_types": ["*"]})
}

/// Creates a subscription to `url` that must be refused; returns the error message, which
/// always says how to allow the address.
async fn refused(app: &TestApp, url: &str) -> String {
    let error = assert_error(
        app.create_subscription(&subscription(url)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "destination_refused",
        Some("url"),
    )
    .await;
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("DISPATCH_ALLOW_DESTINATIONS"),
        "{url}: says how to allow it: {message}"
    );
    message
}

#[tokio::test]
async fn a_destination_at_a_refused_address_literal_is_a_422_naming_the_address_class() {
    let app = guarded().await;
    for (url, says) in [
        (
            "http://127.0.0.1:9000/hook",
            "127.0.0.1 is a loopback address",
        ),
        ("http://127.1/hook", "127.0.0.1 is a loopback address"),
        ("http://2130706433/hook", "127.0.0.1 is a loopback address"),
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://172.16.0.1/hook", "is a private address"),
        ("http://192.168.1.1/hook", "is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "a loopback address"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://100.64.0.1/hook", "shared address space (CGNAT)"),
        ("http://0.0.0.0/hook", "0.0.0.0 is an unspecified address"),
        ("http://[::]/hook", "unspecified"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://[ff02::1]/hook", "multicast"),
        ("http://192.0.2.10/hook", "documentation"),
        ("http://[2001:db8::1]/hook", "documentation"),
        ("http://[fd00::1]/hook", "fd00::1 is a private address"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://198.18.0.1/hook", "benchmarking"),
        ("http://255.255.255.255/hook", "reserved"),
        ("http://[64:ff9b::a00:1]/hook", "private"),
    ] {
        let message = refused(&app, url).await;
        assert!(message.contains(says), "{url}: {message}");
    }
    let (_, list) = json_of(app.get("/subscriptions").await).await;
    assert_eq!(list["data"], json!([]), "nothing was stored: {list}");
}

#[tokio::test]
async fn a_host_name_resolving_to_a_refused_address_is_refused_at_creation() {
    let app = guarded().await;
    for url in [
        "http://localhost:9000/hook",
        "http://LOCALHOST./hook",
        "https://localhost/hook",
    ] {
        let message = refused(&app, url).await;
        assert!(
            message.contains("localhost") && message.contains("resolves to"),
            "{url}: names the host and what it resolves to: {message}"
        );
        assert!(message.contains("loopback"), "{url}: {message}");
    }
}

#[tokio::test]
async fn allowed_ranges_let_a_refused_address_through() {
    let app = TestApp::spawn_with(|s| {
        s.destinations =
            DestinationPolicy::parse("127.0.0.0/8, ::1, 10.20.0.0/16").expect("valid ranges");
    })
    .await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://127.5.6.7/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://10.20.30.40/hook",
        "http://localhost:9000/hook",
    ] {
        let (status, body) = json_of(app.create_subscription(&subscription(url)).await).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
    }
    // Outside the allowed ranges, still refused.
    refused(&app, "http://10.21.0.1/hook").await;
}

#[tokio::test]
async fn public_addresses_and_names_that_do_not_resolve_are_accepted() {
    let app = guarded().await;
    for url in [
        // Public literals: no connection is made at creation.
        "http://93.184.216.34/hook",
        "https://[2606:4700::1111]/hook",
        "http://[::ffff:8.8.8.8]/hook",
        // `.invalid` never resolves (RFC 2606): accepted; the worker checks at connect time.
        "https://nonexistent.invalid/hook",
    ] {
        let (status, body) = json_of(app.create_subscription(&subscription(url)).await).await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
    }
}
