//! The delivery loop's small parts: deferring a busy destination's delivery, collecting finished
//! attempts, the signal an outcome gives its destination, timer instants, and the LISTEN task.

use super::*;

pub(super) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// When the earliest retry or deferral among `outcomes` falls due, as a timer instant.
pub(super) fn earliest_retry(outcomes: &[Outcome]) -> Option<tokio::time::Instant> {
    outcomes
        .iter()
        .filter(|o| o.status != DeliveryStatus::Delivered)
        .filter_map(|o| o.next_attempt_at)
        .min()
        .map(instant_of)
}

/// The timer instant of a wall-clock time (now, when it is already past).
pub(super) fn instant_of(at: chrono::DateTime<chrono::Utc>) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    (at - chrono::Utc::now())
        .to_std()
        .map_or(now, |wait| now + wait)
}

/// What an attempt's outcome tells its destination's concurrency limit.
pub(super) fn signal_of(outcome: &Outcome) -> Signal {
    match (outcome.attempted, outcome.error_code.as_deref()) {
        (false, _) => Signal::NotSent,
        (true, Some(code)) if code == FailureCode::Timeout.as_str() => Signal::TimedOut,
        // A connection that hung until its own timeout is no answer either.
        (true, Some(code))
            if code == FailureCode::Connection.as_str()
                && u64::try_from(outcome.latency_ms).unwrap_or(0)
                    >= u64::try_from(SLOW_ANSWER.as_millis()).unwrap_or(u64::MAX) =>
        {
            Signal::TimedOut
        }
        (true, _) => Signal::Answered(Duration::from_millis(
            u64::try_from(outcome.latency_ms).unwrap_or(0),
        )),
    }
}

/// The deferral of a delivery whose destination already has its share of requests in flight.
pub(super) fn busy(delivery: &ClaimedDelivery) -> Outcome {
    deliver::count_deferral("busy", &delivery.subscription_id);
    deliver::deferral(
        delivery,
        deliver::after(chrono::Utc::now(), BUSY_DESTINATION_WAIT),
    )
}

/// Moves a finished attempt's outcome into the buffer; a cancelled or panicked one stays in
/// `ids` so its lease is handed back.
pub(super) fn collect(
    joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
    ids: &mut HashMap<tokio::task::Id, i64>,
    buffer: &mut Vec<Outcome>,
) {
    match joined {
        Ok((id, outcome)) => {
            ids.remove(&id);
            buffer.push(outcome);
        }
        Err(e) if e.is_panic() => tracing::error!(error = %e, "a delivery task panicked"),
        Err(_) => {}
    }
}

/// Keeps a LISTEN connection open, turning notifications into wake-ups; reconnects with backoff
/// when it drops and wakes once after each (re)connect, since NOTIFYs sent meanwhile are lost.
pub(super) async fn listen(worker: Worker, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match Listener::connect(&worker.inner.database_url).await {
            Ok(mut listener) => {
                worker.inner.listening.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                wake.notify_one();
                loop {
                    match listener.next().await {
                        Ok(()) => wake.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "the LISTEN connection dropped; reconnecting");
                            break;
                        }
                    }
                }
                worker.inner.listening.store(false, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "cannot LISTEN for wake-ups; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
