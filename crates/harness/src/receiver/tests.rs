//! Tests of the counting receiver: routes read from the path, the send time found in a body.

use super::*;

#[test]
fn routes_are_read_from_the_path() {
    assert_eq!(
        parse_route("/h/12/250/5"),
        Some(Route {
            subscription: 12,
            fail_permille: 250,
            delay_ms: 5,
            fault: Fault::Status500,
        })
    );
    assert_eq!(
        parse_route("/h/3/300/0/reset").map(|r| (r.subscription, r.fault)),
        Some((3, Fault::Reset))
    );
    for fault in Fault::EACH {
        let path = format!("/h/1{}", Receiver::faulty_suffix(fault, 10, 0));
        assert_eq!(parse_route(&path).map(|r| r.fault), Some(fault), "{path}");
    }
    assert_eq!(parse_route("/h/1/0/0/explode"), None);
    assert_eq!(parse_route("/h/1/0/0/hang/x"), None);
    assert_eq!(parse_route("/h/1/1001/0"), None);
    assert_eq!(parse_route("/h/1/0"), None);
    assert_eq!(parse_route("/webhook"), None);
    assert_eq!(parse_route("/h/x/0/0"), None);
}

#[test]
fn send_time_is_found_in_the_delivered_body() {
    let body = br#"{"id":"e1","type":"bench.steady","source":"bench","data":{"seq":3,"sent_at_ns":"1764412345678901234"},"timestamp":"2026-11-29T10:35:05.699071Z"}"#;
    assert_eq!(sent_at_ns(body), Some(1_764_412_345_678_901_234));
    assert_eq!(sent_at_ns(br#"{"data":{"sent_at_ns":12}}"#), None);
    assert_eq!(sent_at_ns(br#"{"data":{"sent_at_ns":"12"#), None);
    assert_eq!(sent_at_ns(b""), None);
}
