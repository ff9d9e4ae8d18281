//! Dispatch's ingestion API: an actix-web server over the store. `main.rs` is a thin shell;
//! tests start the same [`startup::Application`] in-process on port 0.

pub mod admin;
pub mod auth;
pub mod body;
pub mod cli;
pub mod committer;
pub mod config;
pub mod console_actions;
pub mod destination;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod headers;
pub mod json;
pub mod key_cache;
pub mod middleware;
pub mod openapi;
pub mod query;
pub mod replayer;
pub mod routes;
pub mod startup;
pub mod tenant_limits;
pub mod views;
pub mod wake;

pub use config::Settings;
pub use startup::Application;
