//! Wake-ups between the API and the workers over LISTEN/NOTIFY. A notification is only a hint
//! that work may be due; the rows are the truth, so a lost one costs at most a poll interval.

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::{Stream, StreamExt};

use crate::StoreError;

/// The channel the API notifies after committing new deliveries.
pub const CHANNEL: &str = "dispatch_deliveries";

/// Sends one wake-up on [`CHANNEL`].
pub async fn notify(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    crate::prepared::prepared("SELECT pg_notify($1, '')")
        .bind::<diesel::sql_types::Text, _>(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// A dedicated (never pooled) connection listening on [`CHANNEL`].
pub struct Listener {
    conn: AsyncPgConnection,
}

impl Listener {
    /// Connects and LISTENs.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        let mut conn = crate::connect::establish(database_url).await?;
        diesel::sql_query(format!("LISTEN {CHANNEL}"))
            .execute(&mut conn)
            .await?;
        Ok(Self { conn })
    }

    /// Waits for the next wake-up. An error means the connection is gone: reconnect.
    pub async fn next(&mut self) -> Result<(), StoreError> {
        let stream = self.conn.notifications_stream();
        next_of(stream).await
    }
}

async fn next_of(
    stream: impl Stream<Item = diesel::QueryResult<diesel::pg::PgNotification>>,
) -> Result<(), StoreError> {
    let mut stream = std::pin::pin!(stream);
    match stream.next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e.into()),
        None => Err(StoreError::Unavailable(
            "the listening connection was closed".to_owned(),
        )),
    }
}
