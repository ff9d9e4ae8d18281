//! The API's side of wake-ups: however many events arrive, the workers get at most one NOTIFY
//! per `notify_interval`, and a wake-up after a quiet spell is never lost.

use std::time::{Duration, Instant};

use dispatch_api::wake::Waker;
use dispatch_store::notify::Listener;
use dispatch_test_support::TestDb;

/// Notifications that arrive on `listener` within `window`.
async fn received_within(listener: &mut Listener, window: Duration) -> usize {
    let until = tokio::time::Instant::now() + window;
    let mut n = 0;
    while let Ok(Ok(())) = tokio::time::timeout_at(until, listener.next()).await {
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_thousand_wake_ups_send_at_most_one_notify_per_interval() {
    let db = TestDb::new().await;
    let mut listener = Listener::connect(db.url()).await.expect("LISTEN");
    let interval = Duration::from_millis(200);
    let waker = Waker::spawn(db.pool(), interval);

    let started = Instant::now();
    for _ in 0..1000 {
        waker.wake();
        tokio::task::yield_now().await;
    }
    let sending = started.elapsed();
    // Listen for a while after the last wake-up: everything the burst caused has arrived.
    let window = interval * 3;
    let got = received_within(&mut listener, sending + window).await;
    let elapsed = started.elapsed();
    let most = 1 + usize::try_from(elapsed.as_millis() / interval.as_millis()).unwrap_or(0);
    assert!(got >= 1, "the burst woke the workers");
    assert!(
        got <= most,
        "{got} NOTIFYs for 1000 wake-ups in {elapsed:?}: at most one per {interval:?}"
    );

    // After a quiet spell, one wake-up is one NOTIFY.
    waker.wake();
    assert_eq!(received_within(&mut listener, interval * 3).await, 1);
}
