//! Real answers checked against their documented schemas, and the schema checker itself.

use super::*;

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        other => panic!("unknown JSON schema type {other:?}"),
    }
}

/// Checks `value` against `schema` (the subset of JSON Schema the document uses: `$ref`, `type`,
/// `enum`, `oneOf`, `required`, `properties`, `items`). An object must have every required
/// property and no property the schema does not list. Returns what does not conform.
fn violations(document: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(document, schema);
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = branches
            .iter()
            .filter(|branch| violations(document, branch, value, at).is_empty())
            .count();
        return if matching == 1 {
            Vec::new()
        } else {
            vec![format!(
                "{at}: {value} matches {matching} branches of oneOf"
            )]
        };
    }
    let mut found = Vec::new();
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        found.push(format!("{at}: {value} is not of type {types:?}"));
        return found;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        found.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(object), Some(properties)) = (
        value.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().expect("required names are strings");
            if !object.contains_key(name) {
                found.push(format!("{at}: required property {name:?} is missing"));
            }
        }
        for (name, item) in object {
            match properties.get(name) {
                Some(property) => found.extend(violations(
                    document,
                    property,
                    item,
                    &format!("{at}.{name}"),
                )),
                None => found.push(format!("{at}: property {name:?} is not documented")),
            }
        }
    }
    if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            found.extend(violations(
                document,
                item_schema,
                item,
                &format!("{at}[{i}]"),
            ));
        }
    }
    found
}

#[track_caller]
fn assert_conforms(document: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let schema = response_schema(document, method, path, status);
    let found = violations(document, schema, body, "$");
    assert!(
        found.is_empty(),
        "{method} {path} {status} does not match its documented schema:\n  {}\nbody: {body}",
        found.join("\n  ")
    );
}

/// The property names a documented object schema lists.
fn property_names(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .expect("an object schema with properties")
        .keys()
        .cloned()
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn real_answers_match_their_documented_schemas() {
    let app = TestApp::spawn().await;
    let document = served_document(&app).await;

    // 201 POST /subscriptions: every documented property, `secret` included.
    let response = app
        .create_subscription(&json!({
            "id": "sub_schema",
            "url": "https://hooks.example.com/schema",
            "event_types": ["order.*"],
            "rate_limit": {"per_second": 5, "burst": 2},
        }))
        .await;
    let (status, created) = json_of(response).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_conforms(&document, "POST", "/subscriptions", 201, &created);
    assert_eq!(
        keys(&created),
        property_names(response_schema(&document, "POST", "/subscriptions", 201)),
        "a new subscription shows exactly the documented properties"
    );

    // 202 POST /events with a delivery, then 200 for the same event again.
    let body = event("evt_schema", "order.created");
    let (status, accepted) = json_of(app.post_event(&body).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_conforms(&document, "POST", "/events", 202, &accepted);
    assert_eq!(
        keys(&accepted),
        property_names(response_schema(&document, "POST", "/events", 202)),
        "an event shows exactly the documented properties"
    );
    assert_eq!(accepted["deliveries"].as_array().map(Vec::len), Some(1));
    let (status, repeated) = json_of(app.post_event(&body).await).await;
    assert_eq!(status, StatusCode::OK, "{repeated}");
    assert_conforms(&document, "POST", "/events", 200, &repeated);

    // GET /events/{id} and its attempts (one failed, one without an answer).
    let (status, fetched) = json_of(app.get("/events/evt_schema").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_conforms(&document, "GET", "/events/{id}", 200, &fetched);
    app.seed_attempt("evt_schema", "sub_schema", 1, Some(500), Some("HTTP 500"))
        .await;
    app.seed_attempt(
        "evt_schema",
        "sub_schema",
        2,
        None,
        Some("connection refused"),
    )
    .await;
    let (status, attempts) = json_of(app.get("/events/evt_schema/attempts").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(attempts["data"].as_array().map(Vec::len), Some(2));
    assert_conforms(&document, "GET", "/events/{id}/attempts", 200, &attempts);

    // A page of subscriptions, and one by id: no secret.
    let (status, page) = json_of(app.get("/subscriptions?limit=1").await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_conforms(&document, "GET", "/subscriptions", 200, &page);
    assert_eq!(
        keys(&page),
        property_names(response_schema(&document, "GET", "/subscriptions", 200))
    );
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    let (status, one) = json_of(app.get("/subscriptions/sub_schema").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_conforms(&document, "GET", "/subscriptions/{id}", 200, &one);

    // A rotated secret, shown once.
    let path = "/subscriptions/{id}/rotate-secret";
    let (status, rotated) = json_of(
        app.post_json(
            "/subscriptions/sub_schema/rotate-secret",
            &json!({"overlap_secs": 60}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_conforms(&document, "POST", path, 200, &rotated);
    assert_eq!(
        keys(&rotated),
        property_names(response_schema(&document, "POST", path, 200))
    );

    // Errors: 422 with a field, 422 invalid_parameter, 404 and 409 without.
    let (status, invalid) = json_of(app.post_event(&json!({"id": "evt_x"})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_conforms(&document, "POST", "/events", 422, &invalid);
    assert_eq!(
        keys(&invalid),
        property_names(response_schema(&document, "POST", "/events", 422)),
        "an invalid_field error shows exactly the documented properties"
    );
    let (status, bad_limit) = json_of(app.get("/subscriptions?limit=0").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_conforms(&document, "GET", "/subscriptions", 422, &bad_limit);
    let (status, missing) = json_of(app.get("/events/evt_missing").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_conforms(&document, "GET", "/events/{id}", 404, &missing);
    let mut conflicting = body.clone();
    conflicting["source"] = json!("another-service");
    let (status, conflict) = json_of(app.post_event(&conflicting).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_conforms(&document, "POST", "/events", 409, &conflict);

    // Health.
    let (status, health) = json_of(app.get("/healthz").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_conforms(&document, "GET", "/healthz", 200, &health);
    let (status, ready) = json_of(app.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_conforms(&document, "GET", "/readyz", 200, &ready);

    // The queue's stats, with a subscription, a delivery and attempts to show.
    let (status, stats) = json_of(app.get("/stats").await).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_conforms(&document, "GET", "/stats", 200, &stats);
    assert_eq!(
        keys(&stats),
        property_names(response_schema(&document, "GET", "/stats", 200))
    );
}

/// The checker itself: it must catch a missing required property, an undocumented one, a wrong
/// type and a value outside an enum (else the test above proves nothing).
#[test]
fn the_schema_check_catches_undocumented_and_missing_properties() {
    let document = serde_json::to_value(dispatch_api::openapi::document()).expect("serialises");
    let schema = response_schema(&document, "POST", "/events", 422);
    let good = json!({"code": "invalid_field", "message": "m", "field": "id"});
    assert!(violations(&document, schema, &good, "$").is_empty());
    for bad in [
        json!({"code": "invalid_field"}),
        json!({"code": "invalid_field", "message": "m", "extra": 1}),
        json!({"code": "invalid_field", "message": 1}),
        json!({"code": "no_such_code", "message": "m"}),
    ] {
        assert!(
            !violations(&document, schema, &bad, "$").is_empty(),
            "{bad} passed"
        );
    }
}
