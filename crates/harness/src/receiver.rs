//! The webhook receiver of `bench` and `chaos`: a hyper HTTP/1.1 server on 127.0.0.1 that
//! stamps each request's arrival and answers as its path says.
//!
//! Subscriptions point at `/h/<subscription>/<failure per mille>/<delay ms>[/<fault>]`: the
//! receiver waits `delay` ms, then misbehaves on that share of requests (drawn at random) and
//! answers `200` to the rest. The fault is `500` (the default: answer 500), `hang` (never
//! answer), `reset` (reset the connection) or `trickle` (a 200 whose body comes one byte every
//! 100 ms, far slower than any delivery timeout). For every `200` it records the pair
//! (subscription, event id) and, the first time a pair arrives, its arrival ([`Receiver::arrivals`],
//! for latencies from the producer's acceptance) and the latency: arrival minus the
//! `sent_at_ns` the load generator put in the event's `data` (both read from this machine's
//! wall clock). A trickled answer is not a delivery: the worker gives up on it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dispatch_test_support::faults::{ResetSwitch, ResettableStream, Trickle};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long a `hang` request is held before its connection is dropped (never answered).
const HANG_FOR: Duration = Duration::from_secs(120);
/// A `trickle` answer: this many bytes, one per interval.
const TRICKLE_BYTES: usize = 64;
const TRICKLE_EVERY: Duration = Duration::from_millis(100);

/// How a destination misbehaves on its failing share of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answers `500`.
    Status500,
    /// Never answers.
    Hang,
    /// Resets the connection (RST) without answering.
    Reset,
    /// Answers `200` with a body that trickles in far slower than any timeout.
    Trickle,
}

impl Fault {
    pub const EACH: [Fault; 4] = [Fault::Status500, Fault::Hang, Fault::Reset, Fault::Trickle];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Status500 => "500",
            Fault::Hang => "hang",
            Fault::Reset => "reset",
            Fault::Trickle => "trickle",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::EACH.into_iter().find(|f| f.name() == text)
    }
}

/// How a path asks to be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub subscription: u32,
    /// Share of requests answered `500`, per mille (0..=1000).
    pub fail_permille: u32,
    pub delay_ms: u64,
    pub fault: Fault,
}

/// Reads `/h/<subscription>/<fail per mille>/<delay ms>[/<fault>]`.
pub fn parse_route(path: &str) -> Option<Route> {
    let mut parts = path.strip_prefix("/h/")?.split('/');
    let route = Route {
        subscription: parts.next()?.parse().ok()?,
        fail_permille: parts.next()?.parse().ok().filter(|&p| p <= 1000)?,
        delay_ms: parts.next()?.parse().ok()?,
        fault: match parts.next() {
            None => Fault::Status500,
            Some(name) => Fault::parse(name)?,
        },
    };
    parts.next().is_none().then_some(route)
}

/// The `sent_at_ns` string of a delivered body. The body is compact JSON written by the worker
/// (`"data":{…,"sent_at_ns":"1764…",…}`), so a scan is enough and far cheaper than parsing.
pub fn sent_at_ns(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_at_ns\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = &body[start..];
    let end = digits.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Default)]
struct Record {
    /// (subscription, event id) → times answered 200.
    delivered: HashMap<(u32, Box<str>), u32>,
    /// Latency of each pair's first 200, ns; and the same by subscription.
    latencies_ns: Vec<u64>,
    latencies_by_subscription: HashMap<u32, Vec<u64>>,
    /// Arrival and latency (ns) of each pair's first 200, in arrival order.
    timeline: Vec<(Instant, u64)>,
    /// Arrival of each pair's first 200.
    arrivals: HashMap<(u32, Box<str>), Instant>,
    /// Requests answered 500 (the failing destinations' attempts).
    failed_answers: u64,
    /// Requests held unanswered, reset, answered with a trickle.
    hung: u64,
    reset: u64,
    trickled: u64,
    /// Requests whose path, event id or `sent_at_ns` could not be read.
    unreadable: u64,
    /// Arrival of the latest first receipt.
    last: Option<Instant>,
}

/// What the receiver saw.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Distinct (subscription, event) pairs answered 200.
    pub unique: u64,
    /// 200s beyond the first, per pair, summed.
    pub duplicates: u64,
    pub failed_answers: u64,
    pub hung: u64,
    pub reset: u64,
    pub trickled: u64,
    pub unreadable: u64,
    pub latencies_ns: Vec<u64>,
    /// Arrival and latency (ns) of each pair's first 200, in arrival order.
    pub timeline: Vec<(Instant, u64)>,
    /// Arrival of the latest first receipt.
    pub last: Option<Instant>,
}

struct State {
    record: Mutex<Record>,
    /// A small xorshift state for the failure draws.
    dice: AtomicU64,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn roll_permille(&self) -> u32 {
        let mut x = self.dice.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.dice.store(x, Ordering::Relaxed);
        (x % 1000) as u32
    }
}

pub struct Receiver {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the benchmark receiver")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            record: Mutex::new(Record::default()),
            dice: AtomicU64::new((0x9e37_79b9_7f4a_7c15 ^ unix_nanos()) | 1),
        });
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // Out of file descriptors, most likely: let some connections close.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, state.clone()));
                }
            }
        });
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// `http://127.0.0.1:<port>/h/`: a subscription's URL is this, its number, then
    /// [`Receiver::suffix`].
    pub fn url_prefix(&self) -> String {
        format!("http://{}/h/", self.addr)
    }

    pub fn suffix(fail_permille: u32, delay_ms: u64) -> String {
        format!("/{fail_permille}/{delay_ms}")
    }

    /// [`Receiver::suffix`] with a fault other than `500`.
    pub fn faulty_suffix(fault: Fault, fail_permille: u32, delay_ms: u64) -> String {
        format!("/{fail_permille}/{delay_ms}/{}", fault.name())
    }

    /// Times each (subscription, event id) pair was answered 200 so far.
    pub fn deliveries(&self) -> HashMap<(u32, Box<str>), u32> {
        self.state.lock().delivered.clone()
    }

    /// When each event's first 200 for `subscription` arrived, by event id.
    pub fn arrivals(&self, subscription: u32) -> HashMap<Box<str>, Instant> {
        self.state
            .lock()
            .arrivals
            .iter()
            .filter(|((sub, _), _)| *sub == subscription)
            .map(|((_, event), at)| (event.clone(), *at))
            .collect()
    }

    /// The latencies (ns) of `subscription`'s first 200s so far, in arrival order.
    pub fn latencies_of(&self, subscription: u32) -> Vec<u64> {
        let record = self.state.lock();
        let latencies = record.latencies_by_subscription.get(&subscription);
        latencies.cloned().unwrap_or_default()
    }

    /// Distinct (subscription, event) pairs answered 200 so far.
    pub fn unique(&self) -> u64 {
        self.state.lock().delivered.len() as u64
    }

    /// Forgets everything received so far (between runs that share one set of subscriptions;
    /// nothing may be in flight).
    pub fn reset(&self) {
        *self.state.lock() = Record::default();
    }

    pub fn received(&self) -> Received {
        let record = self.state.lock();
        Received {
            unique: record.delivered.len() as u64,
            duplicates: record
                .delivered
                .values()
                .map(|&n| u64::from(n.saturating_sub(1)))
                .sum(),
            failed_answers: record.failed_answers,
            hung: record.hung,
            reset: record.reset,
            trickled: record.trickled,
            unreadable: record.unreadable,
            latencies_ns: record.latencies_ns.clone(),
            timeline: record.timeline.clone(),
            last: record.last,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

type Answer = Response<Either<Full<Bytes>, Trickle>>;

fn answer(status: StatusCode) -> Answer {
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

/// One connection: served until the client closes it, or dropped (and reset, when the switch
/// is armed) when a request asks for it.
async fn serve(stream: tokio::net::TcpStream, state: Arc<State>) {
    let (stream, switch) = ResettableStream::new(stream);
    let drop_it = Arc::new(Notify::new());
    let service = {
        let drop_it = drop_it.clone();
        service_fn(move |req| {
            let (state, drop_it, switch) = (state.clone(), drop_it.clone(), switch.clone());
            async move { handle(state, req, &drop_it, &switch).await }
        })
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = drop_it.notified() => {}
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    drop_it: &Notify,
    switch: &ResetSwitch,
) -> Result<Answer, Infallible> {
    let arrived = Instant::now();
    let arrived_ns = unix_nanos();
    let route = parse_route(req.uri().path());
    let event_id = req
        .headers()
        .get("x-dispatch-event-id")
        .and_then(|v| v.to_str().ok())
        .map(Box::<str>::from);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (Some(route), Some(event_id)) = (route, event_id) else {
        state.lock().unreadable += 1;
        return Ok(answer(StatusCode::BAD_REQUEST));
    };
    if route.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(route.delay_ms)).await;
    }
    if route.fail_permille > 0 && state.roll_permille() < route.fail_permille {
        match route.fault {
            Fault::Status500 => {
                state.lock().failed_answers += 1;
                return Ok(answer(StatusCode::INTERNAL_SERVER_ERROR));
            }
            Fault::Hang => {
                state.lock().hung += 1;
                tokio::time::sleep(HANG_FOR).await;
                drop_it.notify_one();
                std::future::pending::<()>().await;
            }
            Fault::Reset => {
                state.lock().reset += 1;
                switch.arm();
                drop_it.notify_one();
                std::future::pending::<()>().await;
            }
            Fault::Trickle => {
                state.lock().trickled += 1;
                let body = Trickle::new(Bytes::from(vec![b'.'; TRICKLE_BYTES]), TRICKLE_EVERY);
                return Ok(Response::new(Either::Right(body)));
            }
        }
    }
    let sent = sent_at_ns(&body);
    let mut record = state.lock();
    let key = (route.subscription, event_id);
    let times = record.delivered.entry(key.clone()).or_insert(0);
    *times += 1;
    if *times == 1 {
        record.arrivals.insert(key, arrived);
        match sent {
            Some(sent) => {
                let latency = arrived_ns.saturating_sub(sent);
                record.latencies_ns.push(latency);
                let by_subscription = record.latencies_by_subscription.entry(route.subscription);
                by_subscription.or_default().push(latency);
                record.timeline.push((arrived, latency));
            }
            None => record.unreadable += 1,
        }
        // First receipts only: a late duplicate does not stretch the delivery window.
        record.last = Some(arrived);
    }
    Ok(answer(StatusCode::OK))
}

#[cfg(test)]
mod tests;
