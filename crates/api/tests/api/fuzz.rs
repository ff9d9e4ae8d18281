//! Property-based fuzzing of the ingestion and subscription routes end to end: arbitrary events,
//! batches, byte-level corruptions of valid bodies and subscriptions go through the real server
//! into a real database. Nothing may answer 5xx, and an accepted event reads back as sent.
//! 256 cases per property (seconds), or `PROPTEST_CASES`.

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{Map, Number, Value, json};

use crate::helpers::{TestApp, json_of};

/// proptest's defaults (256 cases, or `PROPTEST_CASES`); failures are kept as named regression
/// tests (tests/api/hostile.rs), not in files.
fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Runs `property` against one server for every generated case, on a runtime of its own.
fn fuzz<S: Strategy>(
    strategy: S,
    property: impl AsyncFn(&TestApp, S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let app = runtime.block_on(TestApp::spawn());
    let outcome = runner().run(&strategy, |case| runtime.block_on(property(&app, case)));
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{0,8}",
        2 => any::<String>(),
        1 => "\\PC{0,8}",
        1 => "[\\x00-\\x1f\"\\\\]{0,3}",
    ]
}

/// Any JSON value, up to 6 levels and 48 nodes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        (-1e6f64..1e6).prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn event_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "evt_[a-zA-Z0-9_.:-]{1,24}",
        1 => "[a-zA-Z0-9_.:-]{0,3}",
        1 => any::<String>(),
        1 => Just("batch".to_owned()),
    ]
}

fn event_type() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z]{1,6}(\\.[a-z_-]{1,6}){0,3}",
        1 => "[a-z.*]{0,6}",
        1 => any::<String>(),
    ]
}

/// An event body: mostly valid, sometimes with a field missing, of the wrong type or unknown.
fn event_body() -> impl Strategy<Value = Value> {
    (event_id(), event_type(), text(), json_value(), 0u8..12).prop_map(
        |(id, event_type, source, data, mode)| {
            let mut body = json!({"id": id, "type": event_type, "source": source, "data": data});
            let fields = ["id", "type", "source", "data"];
            match mode {
                0 => {
                    body.as_object_mut().map(|o| o.remove(fields[id.len() % 4]));
                }
                1 => body[fields[id.len() % 4]] = json!([1]),
                2 => body["unexpected"] = json!(true),
                _ => {}
            }
            body
        },
    )
}

/// Whether a status is one this API answers a client with: success or a 4xx that says why.
fn acceptable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 201 | 202 | 400 | 409 | 413 | 415 | 422
    )
}

/// An accepted event must read back with the id, type, source and data it was sent with.
async fn assert_reads_back(app: &TestApp, sent: &Value) -> Result<(), TestCaseError> {
    let id = sent["id"].as_str().unwrap_or_default();
    let (status, stored) = json_of(app.get(&format!("/events/{id}")).await).await;
    prop_assert_eq!(status, StatusCode::OK, "{} is not readable: {}", id, stored);
    for field in ["id", "type", "source", "data"] {
        prop_assert!(
            same_json(&stored[field], &sent[field]),
            "{} differs: sent {}, stored {}",
            field,
            sent[field],
            stored[field]
        );
    }
    Ok(())
}

/// Equal as JSON: PostgreSQL's jsonb keeps numbers as decimals, so a float with no fraction such
/// as `9.621004011575427e16` reads back as the integer `96210040115754270`, the same number.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn arbitrary_events_never_get_a_5xx_and_accepted_ones_read_back_unchanged() {
    fuzz(event_body(), async |app, body| {
        let response = app.post_event(&body).await;
        let (status, answer) = json_of(response).await;
        prop_assert!(acceptable(status), "{} for {}: {}", status, body, answer);
        if status.is_success() {
            assert_reads_back(app, &body).await?;
        } else {
            prop_assert!(answer["code"].is_string(), "{}", answer);
        }
        Ok(())
    });
}

#[test]
fn arbitrary_batches_never_get_a_5xx_and_accepted_events_read_back_unchanged() {
    fuzz(
        prop::collection::vec(event_body(), 1..5),
        async |app, events| {
            let (status, answer) = json_of(
                app.post_json("/events/batch", &json!({"events": events}))
                    .await,
            )
            .await;
            prop_assert!(
                acceptable(status),
                "{} for {:?}: {}",
                status,
                events,
                answer
            );
            if status != StatusCode::OK {
                return Ok(());
            }
            let results = answer["results"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(results.len(), events.len(), "{}", answer);
            for (sent, result) in events.iter().zip(&results) {
                let outcome = result["status"].as_str().unwrap_or_default();
                prop_assert!(
                    ["accepted", "replayed", "conflict", "invalid"].contains(&outcome),
                    "{}",
                    result
                );
                if outcome == "accepted" {
                    assert_reads_back(app, sent).await?;
                }
            }
            Ok(())
        },
    );
}

/// Ways to spoil the bytes of a valid body.
#[derive(Debug, Clone)]
enum Corruption {
    Cut(prop::sample::Index),
    Insert(prop::sample::Index, Vec<u8>),
    Append(Vec<u8>),
    RepeatKey(&'static str),
    ByteOrderMark,
}

fn corruption() -> impl Strategy<Value = Corruption> {
    let bytes = prop::collection::vec(any::<u8>(), 1..4);
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Corruption::Cut),
        (any::<prop::sample::Index>(), bytes.clone()).prop_map(|(i, b)| Corruption::Insert(i, b)),
        bytes.prop_map(Corruption::Append),
        prop::sample::select(&["id", "type", "source", "data"][..]).prop_map(Corruption::RepeatKey),
        Just(Corruption::ByteOrderMark),
    ]
}

fn corrupt(body: &Value, how: &Corruption) -> Vec<u8> {
    let mut bytes = body.to_string().into_bytes();
    match how {
        Corruption::Cut(at) => bytes.truncate(at.index(bytes.len())),
        Corruption::Insert(at, junk) => {
            let at = at.index(bytes.len());
            bytes.splice(at..at, junk.iter().copied());
        }
        Corruption::Append(junk) => bytes.extend_from_slice(junk),
        Corruption::RepeatKey(key) => {
            bytes.pop();
            bytes.extend_from_slice(format!(",\"{key}\":1}}").as_bytes());
        }
        Corruption::ByteOrderMark => bytes.splice(0..0, *b"\xEF\xBB\xBF").for_each(drop),
    }
    bytes
}

#[test]
fn corrupted_event_bodies_never_get_a_5xx() {
    fuzz((event_body(), corruption()), async |app, (body, how)| {
        let bytes = corrupt(&body, &how);
        let shown = String::from_utf8_lossy(&bytes).into_owned();
        let (status, answer) = json_of(
            app.post_raw("/events", bytes.clone(), Some("application/json"))
                .await,
        )
        .await;
        prop_assert!(acceptable(status), "{} for {:?}: {}", status, shown, answer);
        if status.is_success() {
            // Whatever was accepted is what the bytes say, read back unchanged.
            let sent: Value = serde_json::from_slice(&bytes).expect("accepted bytes are JSON");
            assert_reads_back(app, &sent).await?;
        }
        Ok(())
    });
}

fn destination() -> impl Strategy<Value = String> {
    // Addresses and names that answer at once everywhere (no DNS traffic leaves the machine).
    let host = prop_oneof![
        Just("127.0.0.1".to_owned()),
        Just("10.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
        Just("[fe80::1]".to_owned()),
        Just("93.184.216.34".to_owned()),
        Just("localhost".to_owned()),
        Just("hooks.nonexistent.invalid".to_owned()),
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}",
    ];
    prop_oneof![
        6 => (prop_oneof![Just("http"), Just("https"), Just("ftp")], host, "(:[0-9]{1,5})?", "(/[a-z%?=&#]{0,6}){0,2}")
            .prop_map(|(scheme, host, port, path)| format!("{scheme}://{host}{port}{path}")),
        1 => any::<String>(),
    ]
}

#[test]
fn arbitrary_subscriptions_never_get_a_5xx_and_created_ones_read_back() {
    let body = (
        prop::option::of("sub_[a-zA-Z0-9_.:-]{1,20}"),
        destination(),
        prop::collection::vec(
            prop_oneof![3 => "[a-z]{1,5}(\\.[a-z]{1,5}){0,2}(\\.\\*)?", 1 => any::<String>()],
            0..4,
        ),
        prop::option::of(prop_oneof![
            "whsec_[A-Za-z0-9+/]{0,40}={0,2}",
            any::<String>()
        ]),
        prop::option::of(json_value()),
    )
        .prop_map(|(id, url, patterns, secret, rate_limit)| {
            let mut body = json!({"url": url, "event_types": patterns});
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            if let Some(secret) = secret {
                body["secret"] = json!(secret);
            }
            if let Some(rate_limit) = rate_limit {
                body["rate_limit"] = rate_limit;
            }
            body
        });
    fuzz(body, async |app, body| {
        let (status, answer) = json_of(app.create_subscription(&body).await).await;
        prop_assert!(acceptable(status), "{} for {}: {}", status, body, answer);
        if status == StatusCode::CREATED {
            let id = answer["id"].as_str().unwrap_or_default();
            let (status, stored) = json_of(app.get(&format!("/subscriptions/{id}")).await).await;
            prop_assert_eq!(status, StatusCode::OK, "{}", stored);
            prop_assert_eq!(&stored["url"], &answer["url"]);
            prop_assert_eq!(&stored["event_types"], &answer["event_types"]);
        }
        Ok(())
    });
}
