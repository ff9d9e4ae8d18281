//! The worker's own port holds up against clients that hold it: a request head that never
//! finishes is cut off, more connections than the cap wait instead of taking descriptors, and
//! liveness reports a delivery loop that stopped making progress.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Harness, PATIENCE};

async fn serving(h: &Harness) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let worker = h.worker(&[]);
    let (addr, server) = dispatch_worker::health::serve("127.0.0.1:0".parse().unwrap(), worker)
        .await
        .unwrap();
    (addr, tokio::spawn(server))
}

/// The status line of a `GET path` on a fresh connection.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("answered")
        .unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_cut_off() {
    let h = Harness::new().await;
    let (addr, server) = serving(&h).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Nothing more is sent: the server closes the connection (after its head timeout) rather
    // than hold it for ever.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the half-sent request was held open");
    assert_eq!(get(addr, "/healthz").await, "HTTP/1.1 200 OK");
    server.abort();
}

#[tokio::test]
async fn health_answers_again_soon_after_more_connections_than_the_cap_are_held() {
    let h = Harness::new().await;
    let (addr, server) = serving(&h).await;
    // Twice the cap, half saying nothing and half half a request head, all held open.
    let mut held = Vec::new();
    for i in 0..dispatch_worker::health::MAX_CONNECTIONS * 2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        }
        held.push(stream);
    }
    // Those over the cap are closed at once and the rest once their time is up: a probe gets
    // through while every one of them is still held by the client.
    let answered = tokio::time::timeout(PATIENCE, async {
        loop {
            if try_get(addr, "/healthz").await.as_deref() == Some("HTTP/1.1 200 OK") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "/healthz never answered while the connections were held"
    );
    // And every held connection was closed by the server.
    for stream in &mut held {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a held connection stayed open");
    }
    server.abort();
}

/// The status line of a `GET path`, or `None` when the server closed without answering.
async fn try_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .ok()?
        .ok()?;
    response.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn liveness_fails_once_the_running_loop_makes_no_progress() {
    let h = Harness::new().await;
    let worker = h.worker(&[]);
    let now = Instant::now();
    assert_eq!(worker.stalled_at(now), None, "not started: alive");
    worker.note_progress();
    assert_eq!(worker.stalled_at(Instant::now()), None);
    let later = Instant::now() + dispatch_worker::runner::LIVENESS_STALL + Duration::from_secs(2);
    assert!(
        worker.stalled_at(later).is_some(),
        "no progress past the bound"
    );
}
