//! The `tenants` scenario (issue 17): tenant `big` loads a backlog, then `small` sends steadily.
//!
//! Both tenants are made through the API with the bench's admin key (`POST /tenants`); each gets
//! a tenant key (`POST /tenants/{id}/keys`) and, with it, one subscription to the receiver
//! (`big`'s is the receiver's subscription 0, `small`'s 1). `big` then loads its backlog through
//! `POST /events/batch` as fast as the API takes it, while the workers already deliver; then
//! `small` sends its events at a fixed rate with its own key. The row's latency is `small`'s
//! (its POST to the first arrival at the receiver); `tenants` in its JSON line says what `big`
//! delivered during `small`'s window, the backlog left at its end, and whether each tenant's
//! events arrived exactly once after the wait for the drain.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::Bench;
use super::load::{self, EventTypes, LoadPlan, Pace};
use super::measure::{Phase, READY_WITHIN};
use super::report::{Row, latency_json};
use super::scenarios::{Spec, Work};
use super::snapshot::Snapshot;
use super::stats;
use crate::http::post_json_answer;
use crate::processes::{self, Launch, Service};
use crate::receiver::Receiver;

/// Longest wait for the API to answer one of the set-up requests.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A tenant of the scenario and the receiver's number for its one subscription.
struct Tenant {
    id: &'static str,
    subscription: u32,
}

const BIG: Tenant = Tenant {
    id: "big",
    subscription: 0,
};
const SMALL: Tenant = Tenant {
    id: "small",
    subscription: 1,
};

/// What sending did, for the row once the deliveries have arrived (or the wait has ended).
pub struct Observed {
    big_accepted: u64,
    big_load: Duration,
    small_accepted: u64,
    small_late: u64,
    per_sec: u64,
    seconds: u64,
    /// `small`'s sending: from its first send to its last answer.
    window: (Instant, Instant),
    drained: bool,
}

/// `big`'s batches in flight at most: with the load's 64 the API's pool runs dry on a 200 000
/// backlog and answers `503` to a seventh of it (a producer would retry; the bench does not).
const BIG_LOAD_CONCURRENCY: u32 = 8;
/// A new key works once the API has reloaded its keys (every second), not at once.
const KEY_USABLE_WITHIN: Duration = Duration::from_secs(10);

/// `POST url` of `body` with `key`: the answer's status and body.
async fn post(bench: &Bench, url: &str, key: &str, body: &Value) -> Result<(StatusCode, Bytes)> {
    post_json_answer(&bench.client, url, key, body.to_string(), CALL_TIMEOUT)
        .await
        .with_context(|| format!("no answer to POST {url}"))
}

/// The JSON of an answer to `POST url`, which must be `201`.
fn created(url: &str, (status, answer): (StatusCode, Bytes)) -> Result<Value> {
    if status != StatusCode::CREATED {
        bail!(
            "POST {url} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    serde_json::from_slice(&answer).with_context(|| format!("reading the answer to POST {url}"))
}

/// `POST url` of `body` with `key`, which must answer `201`; returns the answer's JSON.
async fn create(bench: &Bench, url: &str, key: &str, body: &Value) -> Result<Value> {
    created(url, post(bench, url, key, body).await?)
}

impl Bench {
    /// Creates `tenant`, a tenant key and, with that key, its subscription to `receiver`;
    /// returns the key.
    async fn make_tenant(&self, api: &str, receiver: &Receiver, tenant: &Tenant) -> Result<String> {
        let id = tenant.id;
        let body = json!({"id": id, "name": format!("bench tenant {id}")});
        create(self, &format!("{api}/tenants"), &self.api_key, &body).await?;
        let body = json!({"name": "bench", "scope": "tenant"});
        let url = format!("{api}/tenants/{id}/keys");
        let answer = create(self, &url, &self.api_key, &body).await?;
        let key = answer["key"]
            .as_str()
            .with_context(|| format!("no key in the answer to POST {url}"))?
            .to_owned();
        let destination = format!(
            "{}{}{}",
            receiver.url_prefix(),
            tenant.subscription,
            Receiver::suffix(0, 0)
        );
        // The schema's highest rate limit, as the seeded subscriptions of the other scenarios.
        let body = json!({
            "id": "sub-0",
            "url": destination,
            "event_types": ["bench.*"],
            "rate_limit": {"per_second": 100_000, "burst": 100_000},
        });
        let url = format!("{api}/subscriptions");
        let deadline = Instant::now() + KEY_USABLE_WITHIN;
        let mut answer = post(self, &url, &key, &body).await?;
        while answer.0 == StatusCode::UNAUTHORIZED && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = post(self, &url, &key, &body).await?;
        }
        created(&url, answer)?;
        Ok(key)
    }

    /// The API and the workers started, the tenants made, `big`'s backlog loaded, `small`'s
    /// events sent, then a wait (bounded by the phase's limit) for every delivery.
    pub(super) async fn tenants(
        &self,
        spec: &Spec,
        launch: &Launch<'_>,
        receiver: &Receiver,
        url: &str,
        services: &mut Vec<Service>,
        row: &mut Row,
    ) -> Result<Phase> {
        let Work::Tenants {
            backlog,
            batch_size,
            per_sec,
            seconds,
        } = spec.work
        else {
            bail!("not the tenants scenario");
        };
        services.push(launch.api_as_shipped()?);
        for i in 1..=spec.workers {
            services.push(launch.worker_as_shipped(i)?);
        }
        processes::wait_ready(&self.client, services, READY_WITHIN).await?;
        let api = services[0].base_url.clone();
        let big_key = self.make_tenant(&api, receiver, &BIG).await?;
        let small_key = self.make_tenant(&api, receiver, &SMALL).await?;
        let plan = |key: &str, tenant: &Tenant, pace: Pace, concurrency: u32| LoadPlan {
            url: format!("{api}{}", pace.path()),
            id_prefix: format!("{}-", tenant.id),
            types: EventTypes::Fixed(format!("bench.{}", tenant.id)),
            pace,
            concurrency: concurrency as usize,
            time_limit: spec.limit,
            api_key: key.to_owned(),
            ordering_keys: None,
        };
        let wal_before = self.statements_start(url).await;
        let before = Snapshot::take(services, url).await;
        let started = Instant::now();
        eprintln!("bench:   tenant big loads {backlog} events in batches of {batch_size}");
        let batches = Pace::Batches {
            events: backlog,
            size: batch_size,
        };
        let in_flight = self.args.concurrency.min(BIG_LOAD_CONCURRENCY);
        let big = load::run(&self.client, &plan(&big_key, &BIG, batches, in_flight)).await?;
        let big_accepted = big.accepted + big.repeated;
        eprintln!(
            "bench:   tenant big: {big_accepted} accepted in {:.1} s; {} delivered meanwhile",
            big.elapsed.as_secs_f64(),
            receiver.unique()
        );
        eprintln!("bench:   tenant small sends {per_sec}/s for {seconds} s");
        let opened = Instant::now();
        let rate = Pace::Rate { per_sec, seconds };
        let small_plan = plan(&small_key, &SMALL, rate, self.args.concurrency);
        let mut small = load::run(&self.client, &small_plan).await?;
        let window = (opened, Instant::now());
        let small_accepted = small.accepted + small.repeated;
        for (who, sent) in [("big", &big), ("small", &small)] {
            if sent.refused + sent.errors > 0 {
                eprintln!(
                    "bench:   tenant {who}: {} events refused (last status {:?}), {} unanswered",
                    sent.refused, sent.last_refusal, sent.errors
                );
            }
        }
        row.events_sent = big.sent + small.sent;
        row.events_accepted = big.accepted + small.accepted;
        row.events_failed = big.refused + big.errors + small.refused + small.errors;
        row.ingest_per_sec = Some(stats::per_second(big.accepted, big.elapsed));
        row.ingest_round_trip = stats::summarize(&mut small.round_trips_ns);
        row.timed_out |= big.cut_short || small.cut_short;
        let expected = big_accepted + small_accepted;
        let drained = self
            .wait_for_deliveries(receiver, expected, spec.limit, services)
            .await;
        Ok(Phase {
            started,
            before,
            expected,
            all_arrived: drained,
            accepted_at: Vec::new(),
            rss: None,
            wal_before,
            tenants: Some(Observed {
                big_accepted,
                big_load: big.elapsed,
                small_accepted,
                small_late: small.late,
                per_sec,
                seconds,
                window,
                drained,
            }),
        })
    }
}

/// Distinct events delivered to `subscription`, and the 200s beyond the first of each.
fn tally(deliveries: &HashMap<(u32, Box<str>), u32>, subscription: u32) -> (u64, u64) {
    deliveries
        .iter()
        .filter(|((sub, _), _)| *sub == subscription)
        .fold((0, 0), |(unique, extra), (_, &times)| {
            (unique + 1, extra + u64::from(times.saturating_sub(1)))
        })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl Observed {
    /// Puts `small`'s latency in the row, in place of both tenants' together, and the
    /// per-tenant figures in its `tenants`.
    pub fn report(&self, receiver: &Receiver, row: &mut Row) {
        let (opened, closed) = self.window;
        let width = closed.saturating_duration_since(opened);
        let big_arrivals = receiver.arrivals(BIG.subscription);
        let big_by = |at: Instant| big_arrivals.values().filter(|&&a| a <= at).count() as u64;
        let (big_at_open, big_at_close) = (big_by(opened), big_by(closed));
        let in_window = big_at_close.saturating_sub(big_at_open);
        let small_in_window = (receiver.arrivals(SMALL.subscription).values())
            .filter(|&&a| a <= closed)
            .count();
        row.latency = stats::summarize(&mut receiver.latencies_of(SMALL.subscription));
        let deliveries = receiver.deliveries();
        let (big_delivered, big_dup) = tally(&deliveries, BIG.subscription);
        let (small_delivered, small_dup) = tally(&deliveries, SMALL.subscription);
        let exactly_once = big_delivered == self.big_accepted
            && small_delivered == self.small_accepted
            && big_dup + small_dup == 0;
        row.extra.insert(
            "tenants".to_owned(),
            json!({
                "big": {
                    "backlog": self.big_accepted,
                    "load_secs": round(self.big_load.as_secs_f64()),
                    "load_per_sec": round(stats::per_second(self.big_accepted, self.big_load)),
                    "backlog_at_window_start": self.big_accepted.saturating_sub(big_at_open),
                    "delivered_in_window": in_window,
                    "delivered_per_sec_in_window": round(stats::per_second(in_window, width)),
                    "backlog_at_window_end": self.big_accepted.saturating_sub(big_at_close),
                    "delivered": big_delivered,
                    "duplicates": big_dup,
                },
                "small": {
                    "offered_per_sec": self.per_sec,
                    "offered_secs": self.seconds,
                    "window_secs": round(width.as_secs_f64()),
                    "accepted": self.small_accepted,
                    "sends_late": self.small_late,
                    "delivered_in_window": small_in_window,
                    "delivered": small_delivered,
                    "duplicates": small_dup,
                    "missing": self.small_accepted.saturating_sub(small_delivered),
                    "latency_ms": latency_json(&row.latency),
                },
                "drained": self.drained,
                "exactly_once": self.drained && exactly_once,
            }),
        );
    }
}

/// The line under the table that says what `tenants` measured, from a row's `tenants`.
pub fn summary(row: &Row) -> Option<String> {
    let t = row.extra.get("tenants")?;
    let (big, small) = (&t["big"], &t["small"]);
    let l = &small["latency_ms"];
    let outcome = if t["exactly_once"] == true {
        "drained: every event of both tenants delivered exactly once".to_owned()
    } else if t["drained"] == true {
        format!(
            "drained, NOT exactly once: duplicates big {} small {}",
            big["duplicates"], small["duplicates"]
        )
    } else {
        format!(
            "NOT drained: {} of big's and {} of small's events undelivered",
            (big["backlog"].as_u64().unwrap_or(0))
                .saturating_sub(big["delivered"].as_u64().unwrap_or(0)),
            small["missing"]
        )
    };
    Some(format!(
        "tenants: small {}/s for {} s: {}/{} delivered (in its window {}), p50 {} p90 {} p99 {} \
         max {} ms; big: backlog {} loaded in {} s, {} left when small began, {} delivered/s \
         during small's window, {} left at its end; {outcome}",
        small["offered_per_sec"],
        small["offered_secs"],
        small["delivered"],
        small["accepted"],
        small["delivered_in_window"],
        l["p50"],
        l["p90"],
        l["p99"],
        l["max"],
        big["backlog"],
        big["load_secs"],
        big["backlog_at_window_start"],
        big["delivered_per_sec_in_window"],
        big["backlog_at_window_end"],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_tallied_per_tenant() {
        let deliveries: HashMap<(u32, Box<str>), u32> = [
            ((0, "big-1".into()), 1),
            ((0, "big-2".into()), 2),
            ((1, "small-1".into()), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(tally(&deliveries, BIG.subscription), (2, 1));
        assert_eq!(tally(&deliveries, SMALL.subscription), (1, 0));
        assert_eq!(tally(&deliveries, 7), (0, 0));
    }

    #[test]
    fn the_summary_reads_the_row() {
        let mut row = Row::default();
        assert_eq!(summary(&row), None);
        row.extra.insert(
            "tenants".to_owned(),
            json!({
                "big": {"backlog": 100, "delivered": 40, "duplicates": 0, "load_secs": 1.5,
                        "backlog_at_window_start": 90, "delivered_per_sec_in_window": 10.0,
                        "backlog_at_window_end": 60},
                "small": {"offered_per_sec": 50, "offered_secs": 2, "delivered": 90,
                          "accepted": 100, "delivered_in_window": 80, "missing": 10,
                          "duplicates": 0,
                          "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0}},
                "drained": false,
                "exactly_once": false,
            }),
        );
        let line = summary(&row).expect("a line");
        assert!(line.starts_with("tenants: small 50/s for 2 s: 90/100 delivered"));
        assert!(line.contains("p99 3.0 max 4.0 ms"));
        assert!(line.ends_with("NOT drained: 60 of big's and 10 of small's events undelivered"));
    }
}
