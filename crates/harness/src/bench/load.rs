//! The load generator: POSTs events to the API over HTTP/1.1 keep-alive connections, either as
//! fast as `concurrency` requests in flight allow (closed loop), or at a fixed rate (open loop).
//! Each event carries its send time, `data.sent_at_ns` (unix nanoseconds, as a string: `jsonb`
//! would round so large a number).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper::StatusCode;
use tokio::task::JoinSet;

pub use crate::http::{HttpClient, client};
use crate::http::{post_json, post_json_answer};
use crate::receiver::unix_nanos;
use hyper::body::Bytes;

/// Longest wait for one answer of the API.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which event type the event numbered `seq` gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypes {
    /// Every event has this type.
    Fixed(String),
    /// `{prefix}{seq % count}`: events spread across `count` types.
    Spread { prefix: String, count: u64 },
}

impl EventTypes {
    pub fn of(&self, seq: u64) -> String {
        match self {
            Self::Fixed(t) => t.clone(),
            Self::Spread { prefix, count } => format!("{prefix}{}", seq % (*count).max(1)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// `events` events, `concurrency` requests in flight, each sent when the previous answered.
    Closed { events: u64 },
    /// `per_sec` events a second for `seconds`, at most `concurrency` in flight.
    Rate { per_sec: u64, seconds: u64 },
    /// `events` events in `POST /events/batch` requests of `size`, closed loop.
    Batches { events: u64, size: u64 },
}

impl Pace {
    /// The route this pace sends to.
    pub fn path(&self) -> &'static str {
        match self {
            Self::Batches { .. } => "/events/batch",
            _ => "/events",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub url: String,
    pub id_prefix: String,
    pub types: EventTypes,
    pub pace: Pace,
    pub concurrency: usize,
    /// Nothing is sent after this long.
    pub time_limit: Duration,
    /// The API key, sent as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Events carry `ordering_key` `k{seq % n}` (none when `None`).
    pub ordering_keys: Option<u64>,
}

/// What sending did.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub sent: u64,
    /// Answered `202` (a new event).
    pub accepted: u64,
    /// Answered `200` (already stored: a retry of ours that had in fact arrived).
    pub repeated: u64,
    /// Answered anything else.
    pub refused: u64,
    /// No answer (connection error or timeout).
    pub errors: u64,
    /// Open loop: sends that waited for a free slot past their scheduled time.
    pub late: u64,
    /// Whether the time limit stopped sending before every event was sent.
    pub cut_short: bool,
    /// Request round trips of the answered requests, ns.
    pub round_trips_ns: Vec<u64>,
    /// When each single-event request answered `202` or `200` (batches are not recorded).
    pub accepted_at: Vec<Instant>,
    pub elapsed: Duration,
    /// The last refusal's status, to show what went wrong.
    pub last_refusal: Option<u16>,
}

impl LoadResult {
    fn absorb(&mut self, other: LoadResult) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.repeated += other.repeated;
        self.refused += other.refused;
        self.errors += other.errors;
        self.late += other.late;
        self.round_trips_ns.extend(other.round_trips_ns);
        self.accepted_at.extend(other.accepted_at);
        self.last_refusal = other.last_refusal.or(self.last_refusal);
    }

    /// Counts the `items` events of one batch by the per-item results of a `200`; any other
    /// answer refuses them all.
    fn count_batch(
        &mut self,
        items: usize,
        answer: Option<(StatusCode, Bytes)>,
        round_trip: Duration,
    ) {
        let items = items as u64;
        self.sent += items;
        let Some((status, body)) = answer else {
            self.errors += items;
            return;
        };
        self.round_trips_ns
            .push(u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX));
        let results = (status == StatusCode::OK)
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten();
        let statuses: Vec<String> = results
            .as_ref()
            .and_then(|r| r["results"].as_array())
            .map(|items| {
                items
                    .iter()
                    .map(|i| i["status"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        if statuses.len() as u64 != items {
            self.refused += items;
            self.last_refusal = Some(status.as_u16());
            return;
        }
        for item in statuses {
            match item.as_str() {
                "accepted" => self.accepted += 1,
                "replayed" => self.repeated += 1,
                _ => {
                    self.refused += 1;
                    self.last_refusal = Some(status.as_u16());
                }
            }
        }
    }

    fn count(&mut self, answer: Option<StatusCode>, round_trip: Duration) {
        self.sent += 1;
        match answer {
            Some(status) => {
                self.round_trips_ns
                    .push(u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX));
                match status {
                    StatusCode::ACCEPTED => {
                        self.accepted += 1;
                        self.accepted_at.push(Instant::now());
                    }
                    StatusCode::OK => {
                        self.repeated += 1;
                        self.accepted_at.push(Instant::now());
                    }
                    other => {
                        self.refused += 1;
                        self.last_refusal = Some(other.as_u16());
                    }
                }
            }
            None => self.errors += 1,
        }
    }
}

/// The JSON body of event `seq`, stamped with the current time, with ordering key
/// `k{seq % keys}` when `keys` is given.
pub fn event_body(id_prefix: &str, event_type: &str, seq: u64, keys: Option<u64>) -> String {
    let key = keys.map_or(String::new(), |n| {
        format!(r#","ordering_key":"k{}""#, seq % n.max(1))
    });
    format!(
        r#"{{"id":"{id_prefix}{seq}","type":"{event_type}","source":"bench","data":{{"seq":{seq},"sent_at_ns":"{}"}}{key}}}"#,
        unix_nanos()
    )
}

async fn post(client: &HttpClient, plan: &LoadPlan, body: String) -> Option<StatusCode> {
    post_json(client, &plan.url, &plan.api_key, body, REQUEST_TIMEOUT).await
}

async fn send_one(client: &HttpClient, plan: &LoadPlan, seq: u64, result: &mut LoadResult) {
    let body = event_body(
        &plan.id_prefix,
        &plan.types.of(seq),
        seq,
        plan.ordering_keys,
    );
    let started = Instant::now();
    let answer = post(client, plan, body).await;
    result.count(answer, started.elapsed());
}

pub async fn run(client: &HttpClient, plan: &LoadPlan) -> Result<LoadResult> {
    let started = Instant::now();
    let deadline = started + plan.time_limit;
    let plan = Arc::new(plan.clone());
    let mut result = match plan.pace {
        Pace::Closed { events } => closed_loop(client, &plan, events, deadline).await?,
        Pace::Rate { per_sec, seconds } => {
            open_loop(client, &plan, per_sec, seconds, deadline).await?
        }
        Pace::Batches { events, size } => {
            batch_loop(client, &plan, events, size.max(1), deadline).await?
        }
    };
    result.elapsed = started.elapsed();
    Ok(result)
}

async fn closed_loop(
    client: &HttpClient,
    plan: &Arc<LoadPlan>,
    events: u64,
    deadline: Instant,
) -> Result<LoadResult> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (client, plan, next) = (client.clone(), plan.clone(), next.clone());
        tasks.spawn(async move {
            let mut mine = LoadResult::default();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= events {
                    break;
                }
                send_one(&client, &plan, seq, &mut mine).await;
            }
            mine
        });
    }
    let mut total = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        total.absorb(joined.context("a load task panicked")?);
    }
    total.cut_short = total.sent < events;
    Ok(total)
}

/// Like [`closed_loop`], each request a batch of up to `size` events; every item is counted by
/// the result the API gave it.
async fn batch_loop(
    client: &HttpClient,
    plan: &Arc<LoadPlan>,
    events: u64,
    size: u64,
    deadline: Instant,
) -> Result<LoadResult> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (client, plan, next) = (client.clone(), plan.clone(), next.clone());
        tasks.spawn(async move {
            let mut mine = LoadResult::default();
            while Instant::now() < deadline {
                let first = next.fetch_add(size, Ordering::Relaxed);
                if first >= events {
                    break;
                }
                let seqs = first..(first + size).min(events);
                let items: Vec<String> = seqs
                    .clone()
                    .map(|seq| {
                        event_body(
                            &plan.id_prefix,
                            &plan.types.of(seq),
                            seq,
                            plan.ordering_keys,
                        )
                    })
                    .collect();
                let body = format!(r#"{{"events":[{}]}}"#, items.join(","));
                let started = Instant::now();
                let answer =
                    post_json_answer(&client, &plan.url, &plan.api_key, body, REQUEST_TIMEOUT)
                        .await;
                mine.count_batch(seqs.count(), answer, started.elapsed());
            }
            mine
        });
    }
    let mut total = LoadResult::default();
    while let Some(joined) = tasks.join_next().await {
        total.absorb(joined.context("a load task panicked")?);
    }
    total.cut_short = total.sent < events;
    Ok(total)
}

async fn open_loop(
    client: &HttpClient,
    plan: &Arc<LoadPlan>,
    per_sec: u64,
    seconds: u64,
    deadline: Instant,
) -> Result<LoadResult> {
    let events = per_sec.saturating_mul(seconds);
    let period = Duration::from_secs(1) / u32::try_from(per_sec.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut total = LoadResult::default();
    for seq in 0..events {
        let due = start + period * u32::try_from(seq).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        if Instant::now() >= deadline {
            break;
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                total.late += 1;
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .context("semaphore closed")?
            }
        };
        let (client, plan) = (client.clone(), plan.clone());
        tasks.spawn(async move {
            let mut mine = LoadResult::default();
            send_one(&client, &plan, seq, &mut mine).await;
            drop(permit);
            mine
        });
        // Collect what finished, so the set does not grow with the run.
        while let Some(joined) = tasks.try_join_next() {
            total.absorb(joined.context("a load task panicked")?);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        total.absorb(joined.context("a load task panicked")?);
    }
    total.cut_short = total.sent < events;
    Ok(total)
}

#[cfg(test)]
mod tests;
