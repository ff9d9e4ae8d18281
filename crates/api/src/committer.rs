//! Group commit for `POST /events`: requests that arrive while a group is being stored wait
//! together and are stored as the next group, in one statement and one commit. An idle API
//! stores a lone request at once, so grouping adds no delay; a busy one pays one commit (and one
//! WAL flush) per group instead of one per event.

use std::sync::Arc;

use dispatch_store::models::NewEvent;
use dispatch_store::queries::events::{self, Ingested};
use dispatch_store::{Pool, StoreError, pool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use crate::wake::Waker;

/// Requests that may wait for a committer. When that many wait (the database is slower than
/// the producers), more are answered `503 database_unavailable` at once rather than queued
/// without bound: shedding load, which producers retry.
pub const QUEUE: usize = 4096;

/// How groups are formed.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// Most events stored in one group.
    pub max_events: usize,
    /// Groups stored at the same time (each on its own pooled connection).
    pub committers: usize,
}

struct Job {
    event: NewEvent,
    /// The request's span: the group's statement is traced under the first request's.
    span: tracing::Span,
    reply: oneshot::Sender<Result<Ingested, StoreError>>,
}

/// A cheap, clonable handle to the committer tasks.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts `settings.committers` tasks on the current tokio runtime; they end when every
    /// handle is dropped.
    pub fn spawn(pool: Pool, waker: Waker, settings: GroupSettings) -> Self {
        Self::spawn_with_queue(pool, waker, settings, QUEUE)
    }

    /// [`Committer::spawn`] with room for `waiting` requests.
    fn spawn_with_queue(pool: Pool, waker: Waker, settings: GroupSettings, waiting: usize) -> Self {
        let (jobs, queue) = mpsc::channel(waiting.max(1));
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..settings.committers.max(1) {
            tokio::spawn(run(
                queue.clone(),
                pool.clone(),
                waker.clone(),
                settings.max_events.max(1),
            ));
        }
        Self { jobs }
    }

    /// Stores `event` with whatever other requests are waiting, and answers what happened to it.
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            event,
            span: tracing::Span::current(),
            reply,
        };
        let stopped = || StoreError::Unavailable("the API is shutting down".to_owned());
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!(dispatch_telemetry::metrics::INGEST_SHED).increment(1);
                StoreError::Unavailable(format!(
                    "{} events are waiting to be stored already; shedding load",
                    self.jobs.max_capacity()
                ))
            }
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One committer: takes the first waiting request and every other one already queued (up to
/// `max_events`), stores them as a group, answers each, and starts again.
async fn run(queue: Arc<Mutex<mpsc::Receiver<Job>>>, pool: Pool, waker: Waker, max_events: usize) {
    loop {
        let mut group = Vec::new();
        {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            group.push(first);
            while group.len() < max_events {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        let span = group[0].span.clone();
        commit(&pool, &waker, group).instrument(span).await;
    }
}

/// Stores a group and answers every request in it. A query error (not an outage) stores the
/// events one by one, so one event the database refuses cannot fail the others.
async fn commit(pool: &Pool, waker: &Waker, group: Vec<Job>) {
    metrics::histogram!(dispatch_telemetry::metrics::INGEST_GROUP_SIZE).record(group.len() as f64);
    let (events, replies): (Vec<NewEvent>, Vec<_>) =
        group.into_iter().map(|j| (j.event, j.reply)).unzip();
    match store(pool, &events).await {
        Ok(outcomes) => answer(waker, replies.into_iter().zip(outcomes.into_iter().map(Ok))),
        Err(StoreError::Unavailable(reason)) => {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(reason.clone())));
            }
        }
        Err(e) if events.len() == 1 => answer(waker, replies.into_iter().zip([Err(e)])),
        Err(e) => {
            tracing::warn!(error = %e, events = events.len(), "storing a group failed; storing its events one by one");
            for (event, reply) in events.iter().zip(replies) {
                let outcome = store(pool, std::slice::from_ref(event))
                    .await
                    .and_then(|mut o| {
                        o.pop().ok_or_else(|| StoreError::Corrupt {
                            what: "ingestion",
                            reason: format!("{} was neither stored nor found", event.id),
                        })
                    });
                answer(waker, [(reply, outcome)]);
            }
        }
    }
}

async fn store(pool: &Pool, events: &[NewEvent]) -> Result<Vec<Ingested>, StoreError> {
    let mut conn = pool::connection(pool).await?;
    events::ingest_group(&mut conn, events).await
}

/// Sends each answer, and wakes the workers once if any event got deliveries.
fn answer(
    waker: &Waker,
    answers: impl IntoIterator<
        Item = (
            oneshot::Sender<Result<Ingested, StoreError>>,
            Result<Ingested, StoreError>,
        ),
    >,
) {
    let mut wake = false;
    for (reply, outcome) in answers {
        wake |=
            matches!(&outcome, Ok(Ingested::Created { deliveries, .. }) if !deliveries.is_empty());
        // A request that went away (client disconnected) no longer needs its answer; its event
        // is stored all the same.
        let _ = reply.send(outcome);
    }
    if wake {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dispatch_domain::{EventId, EventType, Source};
    use dispatch_store::DatabaseSettings;

    use super::*;

    fn event(id: &str) -> NewEvent {
        NewEvent {
            tenant: dispatch_domain::TenantId::default_tenant(),
            id: EventId::parse(id).expect("valid"),
            event_type: EventType::parse("a.b").expect("valid"),
            source: Source::parse("s").expect("valid"),
            data: serde_json::json!({}),
            traceparent: None,
            ordering_key: None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_sheds_at_once_instead_of_waiting() {
        // A "database" that accepts connections and never answers: the committer's group waits
        // on it, the next request fills the queue, and the one after is refused at once.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!(
            "postgres://u@{}/d?connect_timeout=30",
            silent.local_addr().expect("an address")
        );
        let pool = dispatch_store::pool::build_pool(&DatabaseSettings {
            url: url.into(),
            max_connections: 1,
            connect_timeout: Duration::from_secs(30),
        });
        let waker = Waker::spawn(pool.clone(), Duration::from_secs(1));
        let settings = GroupSettings {
            max_events: 1,
            committers: 1,
        };
        let committer = Committer::spawn_with_queue(pool, waker, settings, 1);
        let first = tokio::spawn({
            let c = committer.clone();
            async move { c.ingest(event("e1")).await }
        });
        // Let the committer take the first request and block on the database.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = tokio::spawn({
            let c = committer.clone();
            async move { c.ingest(event("e2")).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let shed = tokio::time::timeout(Duration::from_secs(2), committer.ingest(event("e3")))
            .await
            .expect("answered at once, not queued");
        match shed {
            Err(StoreError::Unavailable(reason)) => {
                assert!(reason.contains("shedding"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(
            !first.is_finished() && !second.is_finished(),
            "the others still wait"
        );
        first.abort();
        second.abort();
        drop(silent);
    }
}
