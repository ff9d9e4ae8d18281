//! Integration tests of the delivery worker against a real PostgreSQL (a database of its own per
//! test) and real HTTP receivers on 127.0.0.1. Waits have generous bounds and only stop a broken
//! test from hanging; no assertion depends on how fast anything runs.

#![allow(clippy::unwrap_used)]

mod answers;
mod binary;
mod blackhole;
mod cancellation;
mod failures;
mod helpers;
mod leases;
mod metrics;
mod operational;
mod operator;
mod ordered;
mod outage;
mod port;
mod processes;
mod queue;
mod resilience;
mod retries;
mod rotation;
mod settings;
mod shutdown;
mod signing;
mod ssrf;
mod tenants;
mod wakeups;
