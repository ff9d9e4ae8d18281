//! Tests of the load generator's pacing and its accounting.

use super::*;

#[test]
fn event_bodies_carry_id_type_and_send_time() {
    let body = event_body("steady-", "bench.steady", 7, None);
    assert!(body.starts_with(
        r#"{"id":"steady-7","type":"bench.steady","source":"bench","data":{"seq":7,"sent_at_ns":""#
    ));
    let sent = crate::receiver::sent_at_ns(body.as_bytes()).expect("stamped");
    assert!(sent > 1_700_000_000_000_000_000);
    assert!(body.ends_with(r#""}}"#));
}

#[test]
fn ordered_event_bodies_spread_over_their_keys() {
    let body = event_body("o-", "bench.ordered", 1_234, Some(1_000));
    let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(value["ordering_key"], "k234");
    assert_eq!(value["data"]["seq"], 1_234);
}

#[test]
fn spread_types_cycle() {
    let t = EventTypes::Spread {
        prefix: "bench.d".to_owned(),
        count: 3,
    };
    assert_eq!(t.of(0), "bench.d0");
    assert_eq!(t.of(4), "bench.d1");
    assert_eq!(EventTypes::Fixed("a.b".to_owned()).of(9), "a.b");
}

#[test]
fn results_count_answers_by_kind() {
    let mut r = LoadResult::default();
    r.count(Some(StatusCode::ACCEPTED), Duration::from_millis(1));
    r.count(Some(StatusCode::OK), Duration::from_millis(1));
    r.count(
        Some(StatusCode::SERVICE_UNAVAILABLE),
        Duration::from_millis(1),
    );
    r.count(None, Duration::ZERO);
    assert_eq!(
        (r.sent, r.accepted, r.repeated, r.refused, r.errors),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(r.round_trips_ns.len(), 3);
    assert_eq!(r.last_refusal, Some(503));
}

#[test]
fn batch_items_count_by_their_own_results() {
    let mut r = LoadResult::default();
    let body = r#"{"results":[{"status":"accepted"},{"status":"replayed"},
                  {"status":"conflict"},{"status":"accepted"}]}"#;
    let ms = Duration::from_millis(1);
    r.count_batch(4, Some((StatusCode::OK, Bytes::from(body))), ms);
    assert_eq!((r.sent, r.accepted, r.repeated, r.refused), (4, 2, 1, 1));
    // Results that do not match the items sent refuse them all.
    r.count_batch(3, Some((StatusCode::OK, Bytes::from(body))), ms);
    assert_eq!((r.sent, r.refused), (7, 4));
    // An error answer or none at all.
    r.count_batch(2, Some((StatusCode::SERVICE_UNAVAILABLE, Bytes::new())), ms);
    r.count_batch(5, None, ms);
    assert_eq!((r.sent, r.accepted, r.refused, r.errors), (14, 2, 6, 5));
    assert_eq!(r.last_refusal, Some(503));
    assert_eq!(r.round_trips_ns.len(), 3);
}
