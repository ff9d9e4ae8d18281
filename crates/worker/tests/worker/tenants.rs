//! Two tenants' events with the same ids go out to their own subscriptions, each signed with
//! its own subscription's secret, and every receiver sees the producer's ids (never a stored
//! `<tenant>/` id).

use diesel_async::RunQueryDsl;
use dispatch_domain::{
    DestinationUrl, EventId, EventType, Pattern, Source, SubscriptionId, TenantId,
};
use dispatch_store::models::{NewEvent, NewSubscription};
use dispatch_store::queries::{events, subscriptions};
use dispatch_test_support::secrets::test_keyring;
use serde_json::{Value, json};

use crate::helpers::Harness;
use crate::signing::expected_standard_signature;

async fn subscribe(h: &Harness, tenant: &TenantId, path: &str, secret: &str) {
    let new = NewSubscription {
        tenant: tenant.clone(),
        id: SubscriptionId::parse("sub_1").unwrap(),
        url: DestinationUrl::parse(&h.receiver.url(path)).unwrap(),
        event_types: vec![Pattern::parse("*").unwrap()],
        secret: Some(secret.to_owned()),
        rate_limit: Default::default(),
        settings: Default::default(),
        enabled: true,
    };
    subscriptions::insert(&mut *h.conn().await, &new, &test_keyring())
        .await
        .unwrap()
        .expect("sub_1 is new in its tenant");
}

async fn ingest(h: &Harness, tenant: &TenantId, who: &str) {
    let new = NewEvent {
        tenant: tenant.clone(),
        id: EventId::parse("evt_1").unwrap(),
        event_type: EventType::parse("order.created").unwrap(),
        source: Source::parse("shop").unwrap(),
        data: json!({"who": who}),
        traceparent: None,
        ordering_key: None,
    };
    events::ingest(&mut *h.conn().await, &new).await.unwrap();
}

#[tokio::test]
async fn each_tenants_event_reaches_its_own_subscription_signed_with_its_secret_under_its_own_id() {
    let h = Harness::new().await;
    diesel::sql_query("INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')")
        .execute(&mut *h.conn().await)
        .await
        .unwrap();
    let (default, acme) = (TenantId::default_tenant(), TenantId::parse("acme").unwrap());
    subscribe(&h, &default, "/default", "the default tenant's secret").await;
    subscribe(&h, &acme, "/acme", "acme's own secret, not the other").await;
    ingest(&h, &default, "default").await;
    ingest(&h, &acme, "acme").await;

    assert_eq!(h.worker(&[]).run_once().await.unwrap(), 2);
    for (path, who, secret) in [
        ("/default", "default", "the default tenant's secret"),
        ("/acme", "acme", "acme's own secret, not the other"),
    ] {
        let got = h.receiver.requests(path);
        assert_eq!(got.len(), 1, "{path} gets its tenant's event only");
        let req = &got[0];
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["data"]["who"], who, "{path}");
        assert_eq!(body["id"], "evt_1");
        assert_eq!(req.header("webhook-id"), Some("evt_1"));
        assert_eq!(req.header("x-dispatch-event-id"), Some("evt_1"));
        let timestamp = req.header("webhook-timestamp").unwrap();
        assert_eq!(
            req.header("webhook-signature").unwrap(),
            expected_standard_signature(secret, "evt_1", timestamp, &req.body),
            "{path} is signed with its own subscription's secret"
        );
        assert!(!String::from_utf8_lossy(&req.body).contains("acme/"));
    }
}
