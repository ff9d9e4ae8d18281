//! `POST /subscriptions`, `GET /subscriptions`, `GET /subscriptions/{id}`,
//! `DELETE /subscriptions/{id}`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of};

mod create;
mod lifecycle;
mod listing;
mod settings;

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_owned())
        .collect()
}
