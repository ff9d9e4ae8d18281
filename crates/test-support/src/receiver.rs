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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // e.g. out of file descriptors: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    // A `Reply::close` or `Reply::reset` trips this; the connection future is then dropped,
    // which closes the socket without writing anything (with a reset when armed).
    let close = Arc::new(Notify::new());
    let (stream, reset) = ResettableStream::new(stream);
    let service = {
        let close = Arc::clone(&close);
        service_fn(move |request| {
            let (shared, close, reset) = (Arc::clone(&shared), Arc::clone(&close), reset.clone());
            async move { handle(request, &shared, &close, &reset).await }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = close.notified() => {}
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: &Shared,
    close: &Notify,
    reset: &ResetSwitch,
) -> Result<Response<Either<Full<Bytes>, Trickle>>, Infallible> {
    let (parts, body) = request.into_parts();
    // A body that breaks off is recorded as far as it got.
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let reply = shared.take(Received {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
        arrived: Instant::now(),
    });
    if reply.held
        && let Ok(permit) = shared.gate.acquire().await
    {
        permit.forget();
    }
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    match reply.action {
        Action::Answer => {}
        Action::Hang => std::future::pending::<()>().await,
        Action::Close => {
            close.notify_one();
            std::future::pending::<()>().await;
        }
        Action::Reset => {
            reset.arm();
            close.notify_one();
            std::future::pending::<()>().await;
        }
    }
    let body = match reply.trickle {
        Some(every) => {
            let body = if reply.body.is_empty() {
                Bytes::from_static(&[b'.'; 64])
            } else {
                reply.body
            };
            Either::Right(Trickle::new(body, every))
        }
        None => Either::Left(Full::new(reply.body)),
    };
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(retry_after) = reply.retry_after
        && let Ok(value) = http::HeaderValue::from_str(&retry_after)
    {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    if let Some(location) = reply.location
        && let Ok(value) = http::HeaderValue::from_str(&location)
    {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Sends one request on a fresh connection and reads until the server closes it; returns
    /// everything read (empty when the server closed without answering).
    async fn raw_post(receiver: &Receiver, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(receiver.addr()).await.expect("connect");
        let request = format!(
            "POST {path}?x=1 HTTP/1.1\r\nHost: test\r\nX-Custom: One\r\nx-custom: two\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status_line(response: &str) -> &str {
        response.lines().next().unwrap_or("")
    }

    #[tokio::test]
    async fn replies_follow_the_script_then_the_default_and_requests_are_recorded() {
        let receiver = Receiver::start().await;
        receiver.script(
            "/hook",
            [
                Reply::status(500).body("oops"),
                Reply::status(429).retry_after("7"),
            ],
        );
        receiver.set_default("/hook", Reply::status(204));

        let first = raw_post(&receiver, "/hook", "{\"n\":1}").await;
        assert_eq!(status_line(&first), "HTTP/1.1 500 Internal Server Error");
        assert!(first.ends_with("oops"), "{first}");
        let second = raw_post(&receiver, "/hook", "{}").await;
        assert_eq!(status_line(&second), "HTTP/1.1 429 Too Many Requests");
        assert!(
            second.to_ascii_lowercase().contains("retry-after: 7\r\n"),
            "{second}"
        );
        let third = raw_post(&receiver, "/hook", "{}").await;
        assert_eq!(status_line(&third), "HTTP/1.1 204 No Content");
        // Another path answers 200 by default.
        let other = raw_post(&receiver, "/other", "").await;
        assert_eq!(status_line(&other), "HTTP/1.1 200 OK");

        let got = receiver.requests("/hook");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].method, Method::POST);
        assert_eq!(got[0].path, "/hook");
        assert_eq!(got[0].query.as_deref(), Some("x=1"));
        assert_eq!(&got[0].body[..], b"{\"n\":1}");
        assert_eq!(got[0].header("X-CUSTOM"), Some("One, two"));
        assert!(got[0].headers.contains_key("content-length"));
        assert!(got[0].arrived <= got[1].arrived);
        assert_eq!(receiver.total(), 4);
        assert_eq!(
            receiver
                .wait_for("/other", 1, Duration::from_secs(1))
                .await
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_closing_reply_answers_nothing_and_a_held_one_waits_for_release() {
        let receiver = Receiver::start().await;
        receiver.script("/close", [Reply::close()]);
        assert_eq!(raw_post(&receiver, "/close", "x").await, "");
        assert_eq!(receiver.requests("/close").len(), 1);

        receiver.set_default("/held", Reply::status(202).held());
        let pending = tokio::spawn({
            let url_addr = receiver.addr();
            async move {
                let mut stream = TcpStream::connect(url_addr).await.expect("connect");
                stream
                    .write_all(b"POST /held HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await
                    .expect("write");
                let mut out = Vec::new();
                let _ = stream.read_to_end(&mut out).await;
                String::from_utf8_lossy(&out).into_owned()
            }
        });
        receiver.wait_for("/held", 1, Duration::from_secs(10)).await;
        assert!(!pending.is_finished());
        receiver.release(1);
        let answer = pending.await.expect("the request task");
        assert_eq!(status_line(&answer), "HTTP/1.1 202 Accepted");
    }

    #[tokio::test]
    async fn a_resetting_reply_resets_the_connection_and_a_trickling_one_sends_its_body() {
        let receiver = Receiver::start().await;
        receiver.script("/reset", [Reply::reset()]);
        let mut stream = TcpStream::connect(receiver.addr()).await.expect("connect");
        stream
            .write_all(b"POST /reset HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let err = stream
            .read(&mut buf)
            .await
            .expect_err("a reset, not an orderly close");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(receiver.requests("/reset").len(), 1);

        receiver.script(
            "/slow",
            [Reply::status(201)
                .body("abc")
                .trickle(Duration::from_millis(5))],
        );
        let answer = raw_post(&receiver, "/slow", "").await;
        assert_eq!(status_line(&answer), "HTTP/1.1 201 Created");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("content-length: 3\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("\r\n\r\nabc"), "{answer}");
        receiver.script("/dots", [Reply::ok().trickle(Duration::from_millis(1))]);
        let dots = raw_post(&receiver, "/dots", "").await;
        assert!(dots.ends_with(&".".repeat(64)), "{dots}");
    }

    #[tokio::test]
    #[should_panic(expected = "expected at least 1")]
    async fn waiting_for_requests_that_never_come_fails_with_a_message() {
        let receiver = Receiver::start().await;
        receiver
            .wait_for("/nothing", 1, Duration::from_millis(50))
            .await;
    }
}
