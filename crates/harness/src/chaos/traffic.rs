//! The chaos suite's producer: POSTs events to the API (as fast as a number of requests in
//! flight allow, or at a fixed rate) and keeps every event's answer and when it came, so that a
//! scenario knows exactly which events were accepted and when the API refused or recovered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{HttpClient, post_json};
use crate::receiver::unix_nanos;

/// Longest wait for one answer of the API.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where events go and what they look like.
#[derive(Clone)]
pub struct Producer {
    pub client: HttpClient,
    /// `http://…/events`; [`Producer::retarget`] moves the next sends to another API.
    pub url: Arc<RwLock<String>>,
    pub api_key: String,
    /// Event ids are this followed by the sequence number.
    pub id_prefix: String,
    pub event_type: String,
    /// Bytes of filler in each event's data (`pad`), to fill a disk sooner; 0 for none.
    pub padding: usize,
}

/// One POST and its answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub seq: u64,
    /// The status, or `None` when no answer came (connection error or timeout).
    pub status: Option<u16>,
    /// When it was sent and answered, from the start of sending.
    pub sent_at: Duration,
    pub answered_at: Duration,
}

impl Answer {
    /// `202` (stored now) or `200` (stored before: a repeat of an accepted event).
    pub fn accepted(&self) -> bool {
        matches!(self.status, Some(200 | 202))
    }
}

/// Every answer of one run of the producer.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub answers: Vec<Answer>,
    /// Paced sending: sends that waited for a free slot past their time.
    pub late: u64,
    /// When sending began (the answers' times count from it).
    pub began: Option<std::time::Instant>,
}

impl Sent {
    pub fn sent(&self) -> u64 {
        self.answers.len() as u64
    }

    /// The ids of the accepted events.
    pub fn accepted_ids(&self, producer: &Producer) -> Vec<String> {
        self.answers
            .iter()
            .filter(|a| a.accepted())
            .map(|a| format!("{}{}", producer.id_prefix, a.seq))
            .collect()
    }

    /// Each accepted event's id and when its answer came (its acceptance, as the producer saw
    /// it), in order of sending.
    pub fn accepted_at(&self, producer: &Producer) -> Vec<(String, std::time::Instant)> {
        let Some(began) = self.began else {
            return Vec::new();
        };
        self.answers
            .iter()
            .filter(|a| a.accepted())
            .map(|a| {
                (
                    format!("{}{}", producer.id_prefix, a.seq),
                    began + a.answered_at,
                )
            })
            .collect()
    }

    /// Answers other than 200/202, by status.
    pub fn refused(&self) -> BTreeMap<u16, u64> {
        let mut out = BTreeMap::new();
        for a in &self.answers {
            if let Some(status) = a.status.filter(|_| !a.accepted()) {
                *out.entry(status).or_insert(0) += 1;
            }
        }
        out
    }

    pub fn unanswered(&self) -> u64 {
        self.answers.iter().filter(|a| a.status.is_none()).count() as u64
    }

    /// Answers (not accepted, or none at all) that came within `[from, to]`.
    pub fn failures_between(&self, from: Duration, to: Duration) -> (u64, u64) {
        let within = |a: &&Answer| a.answered_at >= from && a.answered_at <= to;
        let refused = self
            .answers
            .iter()
            .filter(within)
            .filter(|a| a.status.is_some() && !a.accepted())
            .count() as u64;
        let unanswered = self
            .answers
            .iter()
            .filter(within)
            .filter(|a| a.status.is_none())
            .count() as u64;
        (refused, unanswered)
    }

    /// When the first event sent at or after `since` was accepted.
    pub fn first_accepted_after(&self, since: Duration) -> Option<Duration> {
        self.answers
            .iter()
            .filter(|a| a.accepted() && a.sent_at >= since)
            .map(|a| a.answered_at)
            .min()
    }
}

/// `len` letters and digits that PostgreSQL cannot compress (pseudo-random, from `seq`), so a
/// padded event takes its size on disk.
fn filler(seq: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(ALPHABET[(state % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

fn body(producer: &Producer, seq: u64) -> String {
    let pad = if producer.padding > 0 {
        format!(r#","pad":"{}""#, filler(seq, producer.padding))
    } else {
        String::new()
    };
    format!(
        r#"{{"id":"{}{seq}","type":"{}","source":"chaos","data":{{"seq":{seq},"sent_at_ns":"{}"{pad}}}}}"#,
        producer.id_prefix,
        producer.event_type,
        unix_nanos()
    )
}

async fn send(producer: &Producer, seq: u64, start: Instant) -> Answer {
    let sent_at = start.elapsed();
    let url = producer
        .url
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let status = post_json(
        &producer.client,
        &url,
        &producer.api_key,
        body(producer, seq),
        REQUEST_TIMEOUT,
    )
    .await
    .map(|s| s.as_u16());
    Answer {
        seq,
        status,
        sent_at,
        answered_at: start.elapsed(),
    }
}

impl Producer {
    pub fn new(client: HttpClient, url: String, api_key: String, id_prefix: String) -> Self {
        let event_type = format!(
            "chaos.{}",
            id_prefix.trim_end_matches('-').replace('-', "_")
        );
        Self {
            client,
            url: Arc::new(RwLock::new(url)),
            api_key,
            id_prefix,
            event_type,
            padding: 0,
        }
    }

    /// Sends from now on go to `url` (requests in flight finish where they are).
    pub fn retarget(&self, url: String) {
        *self.url.write().unwrap_or_else(PoisonError::into_inner) = url;
    }

    /// Sends `events` events with `concurrency` requests in flight, each as soon as a previous
    /// one was answered; stops early after `limit`.
    pub async fn closed(&self, events: u64, concurrency: usize, limit: Duration) -> Result<Sent> {
        let start = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (producer, next) = (self.clone(), next.clone());
            tasks.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= events || start.elapsed() >= limit {
                        break;
                    }
                    mine.push(send(&producer, seq, start).await);
                }
                mine
            });
        }
        let mut sent = Sent {
            began: Some(start.into_std()),
            ..Sent::default()
        };
        while let Some(joined) = tasks.join_next().await {
            sent.answers
                .extend(joined.context("a producer task panicked")?);
        }
        sent.answers.sort_by_key(|a| a.seq);
        Ok(sent)
    }

    /// Sends `per_sec` events a second for `seconds`, at most `max_in_flight` at once (a send
    /// whose time has come waits for a free slot: it is counted late).
    pub async fn paced(&self, per_sec: u64, seconds: u64, max_in_flight: usize) -> Result<Sent> {
        let start = Instant::now();
        let events = per_sec.saturating_mul(seconds);
        let period = Duration::from_secs(1) / u32::try_from(per_sec.max(1)).unwrap_or(u32::MAX);
        let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let mut sent = Sent {
            began: Some(start.into_std()),
            ..Sent::default()
        };
        for seq in 0..events {
            tokio::time::sleep_until(start + period * u32::try_from(seq).unwrap_or(u32::MAX)).await;
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    sent.late += 1;
                    slots
                        .clone()
                        .acquire_owned()
                        .await
                        .context("semaphore closed")?
                }
            };
            let producer = self.clone();
            tasks.spawn(async move {
                let answer = send(&producer, seq, start).await;
                drop(permit);
                answer
            });
            while let Some(joined) = tasks.try_join_next() {
                sent.answers
                    .push(joined.context("a producer task panicked")?);
            }
        }
        while let Some(joined) = tasks.join_next().await {
            sent.answers
                .push(joined.context("a producer task panicked")?);
        }
        sent.answers.sort_by_key(|a| a.seq);
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(seq: u64, status: Option<u16>, sent: u64, answered: u64) -> Answer {
        Answer {
            seq,
            status,
            sent_at: Duration::from_millis(sent),
            answered_at: Duration::from_millis(answered),
        }
    }

    #[test]
    fn answers_are_summed_up_by_kind_and_time() {
        let producer = Producer::new(
            crate::http::client(1),
            String::new(),
            String::new(),
            "c-".to_owned(),
        );
        let sent = Sent {
            answers: vec![
                answer(0, Some(202), 0, 5),
                answer(1, Some(503), 10, 20),
                answer(2, None, 15, 1000),
                answer(3, Some(503), 30, 40),
                answer(4, Some(200), 50, 60),
                answer(5, Some(202), 45, 70),
            ],
            late: 0,
            began: None,
        };
        assert_eq!(sent.sent(), 6);
        assert_eq!(sent.accepted_ids(&producer), ["c-0", "c-4", "c-5"]);
        assert!(sent.accepted_at(&producer).is_empty(), "no start, no times");
        let began = std::time::Instant::now();
        let timed = Sent {
            began: Some(began),
            ..sent.clone()
        };
        assert_eq!(
            timed.accepted_at(&producer),
            [
                ("c-0".to_owned(), began + Duration::from_millis(5)),
                ("c-4".to_owned(), began + Duration::from_millis(60)),
                ("c-5".to_owned(), began + Duration::from_millis(70)),
            ]
        );
        assert_eq!(sent.refused(), BTreeMap::from([(503, 2)]));
        assert_eq!(sent.unanswered(), 1);
        assert_eq!(
            sent.failures_between(Duration::from_millis(10), Duration::from_millis(40)),
            (2, 0)
        );
        assert_eq!(
            sent.first_accepted_after(Duration::from_millis(40)),
            Some(Duration::from_millis(60))
        );
        assert_eq!(sent.first_accepted_after(Duration::from_millis(51)), None);
    }

    #[test]
    fn an_event_body_carries_its_id_type_and_send_time() {
        let producer = Producer::new(
            crate::http::client(1),
            "http://127.0.0.1:1/events".to_owned(),
            String::new(),
            "kill-worker-".to_owned(),
        );
        let b = body(&producer, 7);
        let v: serde_json::Value = serde_json::from_str(&b).expect("JSON");
        assert_eq!(v["id"], "kill-worker-7");
        assert_eq!(v["type"], "chaos.kill_worker");
        producer.retarget("http://127.0.0.1:2/events".to_owned());
        assert_eq!(
            *producer.url.read().expect("lock"),
            "http://127.0.0.1:2/events"
        );
        assert_eq!(v["data"]["seq"], 7);
        assert!(crate::receiver::sent_at_ns(b.as_bytes()).is_some());
        assert!(v["data"].get("pad").is_none());
        let padded = Producer {
            padding: 100,
            ..producer
        };
        let v: serde_json::Value = serde_json::from_str(&body(&padded, 8)).expect("JSON");
        assert_eq!(v["data"]["pad"].as_str().map(str::len), Some(100));
        assert_ne!(
            filler(1, 100),
            filler(2, 100),
            "every event's filler differs"
        );
        let distinct: std::collections::BTreeSet<char> = filler(8, 100).chars().collect();
        assert!(distinct.len() > 30, "not a repeated pattern: {distinct:?}");
    }
}
