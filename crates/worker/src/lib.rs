//! Dispatch's delivery worker: claims due deliveries from PostgreSQL under a lease, POSTs each
//! to its destination signed in both the seed's and Standard Webhooks' forms, records the
//! attempt, and retries with backoff until delivered or failed. `main.rs` is a thin shell over
//! [`runner::Worker`], which tests drive directly.

pub mod cli;
pub mod client;
pub mod config;
pub mod deliver;
pub mod health;
pub mod health_sweep;
pub mod request;
pub mod resilience;
pub mod runner;

pub use config::Settings;
pub use runner::{RunSummary, Worker};
