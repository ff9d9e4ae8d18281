//! A scriptable webhook receiver for delivery tests: a hyper HTTP/1.1 server on `127.0.0.1:0`
//! that records every request it gets and answers each path from a script.
//!
//! Each path has a queue of [`Reply`]s, used one per request in order; once the queue is empty
//! the path's default answers (`200` unless [`Receiver::set_default`] says otherwise). A reply
//! can wait before answering (for a time, or until the test calls [`Receiver::release`]), carry
//! `Retry-After`, never answer ([`Reply::hang`]), close the connection without answering
//! ([`Reply::close`]), reset it ([`Reply::reset`]) or send its body one byte at a time
//! ([`Reply::trickle`]). A request is recorded as soon as its body
//! has been read, before the reply's delay, so a test can see what is in flight.
//!
//! The server stops, closing every connection, when the [`Receiver`] is dropped.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::faults::{ResetSwitch, ResettableStream, Trickle};

mod serve;

use serve::accept_loop;

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Answer with the reply's status (after its delay).
    Answer,
    /// Never answer; the connection stays open until the client gives up.
    Hang,
    /// Close the connection without answering (after the reply's delay).
    Close,
    /// Reset the connection (RST) without answering (after the reply's delay).
    Reset,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    delay: Option<Duration>,
    held: bool,
    retry_after: Option<String>,
    location: Option<String>,
    body: Bytes,
    action: Action,
    /// Send the body one byte per this interval.
    trickle: Option<Duration>,
}

impl Default for Reply {
    fn default() -> Self {
        Self::status(200)
    }
}

impl Reply {
    /// Answers with `status` (and an empty body) at once.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: None,
            held: false,
            retry_after: None,
            location: None,
            body: Bytes::new(),
            action: Action::Answer,
            trickle: None,
        }
    }

    /// `200 OK`.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// Never answers.
    pub fn hang() -> Self {
        Self {
            action: Action::Hang,
            ..Self::ok()
        }
    }

    /// Closes the connection without answering.
    pub fn close() -> Self {
        Self {
            action: Action::Close,
            ..Self::ok()
        }
    }

    /// Resets the connection (TCP RST) without answering.
    pub fn reset() -> Self {
        Self {
            action: Action::Reset,
            ..Self::ok()
        }
    }

    /// Sends the status and headers at once, then the body (64 dots unless [`Reply::body`]
    /// says otherwise) one byte per `every`: a receiver that trickles its answer.
    #[must_use]
    pub fn trickle(mut self, every: Duration) -> Self {
        self.trickle = Some(every);
        self
    }

    /// Waits this long before answering (or closing).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Waits until [`Receiver::release`] lets it go (then for its delay, if any), so a test can
    /// act while the request is in flight without guessing how long that takes.
    #[must_use]
    pub fn held(mut self) -> Self {
        self.held = true;
        self
    }

    /// Adds `Retry-After: <value>` to the answer.
    #[must_use]
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Adds `Location: <url>` to the answer (a redirect, with a 3xx status).
    #[must_use]
    pub fn location(mut self, url: impl Into<String>) -> Self {
        self.location = Some(url.into());
        self
    }

    /// Answers with this body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Header names in lowercase; repeated headers are joined with `", "`.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    /// When the whole request had been read.
    pub arrived: Instant,
}

impl Received {
    /// The value of a header (the name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    defaults: HashMap<String, Reply>,
    received: Vec<Received>,
}

struct Shared {
    state: Mutex<State>,
    /// Permits for held replies, added by `Receiver::release`.
    gate: Semaphore,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            gate: Semaphore::new(0),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the request and picks its reply.
    fn take(&self, received: Received) -> Reply {
        let mut state = self.lock();
        let path = received.path.clone();
        state.received.push(received);
        if let Some(reply) = state.scripts.get_mut(&path).and_then(VecDeque::pop_front) {
            return reply;
        }
        state.defaults.get(&path).cloned().unwrap_or_default()
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free port of `127.0.0.1`.
    ///
    /// # Panics
    /// If no port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("the receiver cannot listen on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the receiver has no local address: {e}"));
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Self {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port><path>`; `path` should start with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Appends replies to `path`'s queue.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .lock()
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// What `path` answers once its queue is empty.
    pub fn set_default(&self, path: &str, reply: Reply) {
        self.shared.lock().defaults.insert(path.to_owned(), reply);
    }

    /// Lets `n` held replies (whichever path) go on, now or as soon as they arrive.
    pub fn release(&self, n: usize) {
        self.shared.gate.add_permits(n);
    }

    /// Every request to `path` so far, in arrival order.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.shared
            .lock()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Every request so far, whatever its path, in arrival order.
    pub fn all_requests(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// How many requests arrived, whatever their path.
    pub fn total(&self) -> usize {
        self.shared.lock().received.len()
    }

    /// Waits until `path` has received at least `n` requests and returns them all.
    ///
    /// # Panics
    /// If fewer than `n` arrived within `timeout` (a generous bound meant only to stop a test
    /// that would otherwise hang, never a timing assertion).
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path} received {} request(s) within {timeout:?}, expected at least {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least `n` requests arrived in all (any path) and returns them all.
    ///
    /// # Panics
    /// As [`Receiver::wait_for`].
    pub async fn wait_for_total(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.all_requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} request(s) within {timeout:?}, expected at least {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.accept.abort();
    }
}

#[cfg(test)]
mod tests;
