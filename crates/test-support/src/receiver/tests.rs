//! Tests of the receiver over raw TCP: scripts, defaults, recording, holds, hangs, closes, resets, trickles.

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
