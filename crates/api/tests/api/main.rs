//! Black-box tests of the API: a real server on 127.0.0.1 over a real PostgreSQL database of the
//! test's own, driven over HTTP. One test binary (modules below) so it builds once.

mod admin;
mod auth;
mod batch;
mod console;
mod destinations;
mod endpoint_health;
mod errors;
mod events;
mod filters;
mod fuzz;
mod health;
mod helpers;
mod hostile;
mod keys;
mod metrics;
mod openapi;
mod operate;
mod ordering;
mod outage;
mod patch;
mod replays;
mod secrets;
mod subscriptions;
mod tenants;
mod wake;
