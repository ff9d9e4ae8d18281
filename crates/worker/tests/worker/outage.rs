//! A database outage under a running worker: reached through a TCP proxy the test stops and
//! starts, the worker's `/readyz` turns unready, its listener reconnects once the database is
//! back, and an event stored during the outage is delivered without a restart.

use std::time::Duration;

use dispatch_test_support::proxy::TcpProxy;
use serde_json::json;

use crate::helpers::{Harness, PATIENCE, eventually};

async fn readyz(addr: std::net::SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn readiness_follows_the_database_and_the_worker_recovers_by_itself() {
    let h = Harness::new().await;
    h.subscribe("sub_1", "/hook", None).await;
    let proxy = TcpProxy::for_postgres(h.db.url()).await.unwrap();
    let through_proxy = proxy.url_for(h.db.url());
    let mut settings = h.settings(&[
        ("DISPATCH_POLL_INTERVAL_MS", "200"),
        ("DISPATCH_DB_CONNECT_TIMEOUT_MS", "500"),
    ]);
    settings.database.url = through_proxy.into();
    let worker = dispatch_worker::Worker::new(&settings).unwrap();
    let (addr, server) =
        dispatch_worker::health::serve("127.0.0.1:0".parse().unwrap(), worker.clone())
            .await
            .unwrap();
    let serving = tokio::spawn(server);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move {
            worker
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });

    eventually("the worker is ready", PATIENCE, || async {
        readyz(addr).await == 200
    })
    .await;

    proxy.stop().await;
    eventually("the worker turns unready", PATIENCE, || async {
        readyz(addr).await == 503
    })
    .await;
    // Stored meanwhile (directly, not through the proxy): it must not be lost.
    h.ingest("evt_during_outage", "a.b", json!({})).await;

    proxy.start().await.unwrap();
    eventually("the worker is ready again", PATIENCE, || async {
        readyz(addr).await == 200
    })
    .await;
    h.receiver.wait_for("/hook", 1, PATIENCE).await;
    eventually("the delivery is recorded", PATIENCE, || async {
        h.delivery("evt_during_outage", "sub_1").await.status == "delivered"
    })
    .await;

    let _ = stop.send(());
    running.await.unwrap();
    serving.abort();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
