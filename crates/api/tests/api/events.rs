//! `POST /events`, `GET /events/{id}`, `GET /events/{id}/attempts`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, event, json_of, raw_chunked_post};

mod ingest;
mod limits;
mod reads;
mod validation;

fn subscription_ids(event: &Value) -> BTreeSet<String> {
    event["deliveries"]
        .as_array()
        .expect("deliveries is an array")
        .iter()
        .map(|d| d["subscription_id"].as_str().expect("an id").to_owned())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn delivery<'a>(event: &'a Value, subscription_id: &str) -> &'a Value {
    event["deliveries"]
        .as_array()
        .expect("deliveries is an array")
        .iter()
        .find(|d| d["subscription_id"] == subscription_id)
        .unwrap_or_else(|| panic!("no delivery to {subscription_id} in {event}"))
}
