//! Per-key ordering against a real PostgreSQL: the rules one at a time (`rules`), and a property
//! test of the claim rule over random interleavings of ingestion, claims by several workers,
//! outcomes, expired leases, replays and skips (`property`).

#![allow(clippy::unwrap_used)]

mod helpers;
mod property;
mod rules;
