//! Outbound safety: without an explicit allowance, a destination on loopback (by IP literal or
//! by a name that resolves there) is refused before any byte is sent, with a stable failure code,
//! and the delivery fails at once (retrying cannot change the answer; a replay after the
//! allowlist changes can).

use serde_json::json;

use crate::helpers::Harness;

#[tokio::test]
async fn loopback_destinations_are_refused_unless_allowed() {
    let h = Harness::new().await;
    // The receiver listens on 127.0.0.1; `localhost` resolves there too.
    let port = h.receiver.addr().port();
    h.subscribe_url("sub_literal", &h.receiver.url("/literal"), None)
        .await;
    h.subscribe_url("sub_named", &format!("http://localhost:{port}/named"), None)
        .await;
    h.ingest("evt_1", "a.b", json!({})).await;

    let guarded = h.worker(&[("DISPATCH_ALLOW_DESTINATIONS", "")]);
    guarded.run_once().await.unwrap();
    assert_eq!(
        h.receiver.total(),
        0,
        "nothing may reach a refused destination"
    );
    for sub in ["sub_literal", "sub_named"] {
        let delivery = h.delivery("evt_1", sub).await;
        assert_eq!(
            (delivery.status.as_str(), delivery.attempts),
            ("failed", 1),
            "{sub}: failed at once, not retried for hours"
        );
        let attempts = h.attempts_of(delivery.id).await;
        assert_eq!(attempts.len(), 1, "{sub}");
        assert_eq!(
            attempts[0].error_code.as_deref(),
            Some("destination_refused"),
            "{sub}"
        );
        assert_eq!(attempts[0].status_code, None);
        let error = attempts[0].error.clone().unwrap_or_default();
        assert!(error.contains("loopback"), "{sub}: {error}");
    }

    // Allowed explicitly, the same deliveries go through once replayed.
    for sub in ["sub_literal", "sub_named"] {
        let replayed = dispatch_store::queries::ops::replay(
            &mut *h.conn().await,
            &dispatch_domain::TenantId::default_tenant(),
            &dispatch_store::queries::ops::ReplaySelector::Subscription(sub.to_owned()),
        )
        .await
        .unwrap();
        assert_eq!(replayed, 1);
    }
    let allowed = h.worker(&[("DISPATCH_ALLOW_DESTINATIONS", "127.0.0.0/8,::1")]);
    allowed.run_once().await.unwrap();
    assert_eq!(h.delivery("evt_1", "sub_literal").await.status, "delivered");
    assert_eq!(h.delivery("evt_1", "sub_named").await.status, "delivered");
}

#[test]
fn a_bad_allowance_stops_the_start_naming_the_key() {
    let env: std::collections::HashMap<String, String> =
        [("DISPATCH_ALLOW_DESTINATIONS", "10.0.0.0/8,not-a-range")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let err = dispatch_worker::Settings::load_from(None, &env).expect_err("refused");
    assert!(
        err.to_string()
            .contains("allow_destinations (DISPATCH_ALLOW_DESTINATIONS)"),
        "{err}"
    );
}
