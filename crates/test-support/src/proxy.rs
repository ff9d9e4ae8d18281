//! A TCP proxy for outage tests: it listens on `127.0.0.1:<port>` and forwards every connection
//! to an upstream address (e.g. the test PostgreSQL). [`TcpProxy::stop`] closes the listener and
//! every live connection, as if the database went away; [`TcpProxy::start`] listens again on the
//! same port, so a client configured with the proxy's address recovers without being restarted.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The tasks of a proxy that is listening.
struct Running {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Running {
    fn abort(&self) {
        self.accept.abort();
        for connection in lock(&self.connections).iter() {
            connection.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stoppable TCP forwarder from `127.0.0.1:<port>` to `upstream`.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: String,
    running: Mutex<Option<Running>>,
}

impl TcpProxy {
    /// Listens on a free port of `127.0.0.1` and forwards to `upstream` (`host:port`).
    pub async fn start_to(upstream: impl Into<String>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Self {
            addr: listener.local_addr()?,
            upstream: upstream.into(),
            running: Mutex::new(None),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    /// A proxy to the server a `postgres://` URL names (port 5432 when the URL has none).
    pub async fn for_postgres(url: &str) -> io::Result<Self> {
        let upstream = host_port_of(url).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no host in database URL {url:?}"),
            )
        })?;
        Self::start_to(upstream).await
    }

    /// The address the proxy listens on (the same after every restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its host and port replaced by the proxy's, keeping credentials, database and
    /// parameters.
    pub fn url_for(&self, url: &str) -> String {
        with_authority_host(url, &self.addr.to_string())
    }

    /// Whether the proxy is listening.
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// Closes the listener and every connection through it; new connections are refused until
    /// [`TcpProxy::start`]. Returns once all of them are closed.
    pub async fn stop(&self) {
        let Some(running) = lock(&self.running).take() else {
            return;
        };
        running.accept.abort();
        // Once the accept task is gone no new connection task can appear.
        let _ = running.accept.await;
        let connections = std::mem::take(&mut *lock(&running.connections));
        for connection in &connections {
            connection.abort();
        }
        for connection in connections {
            let _ = connection.await;
        }
    }

    /// Listens again on the same port (a no-op when already listening).
    pub async fn start(&self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = Arc::clone(&connections);
        let upstream = self.upstream.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    // e.g. out of file descriptors: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream.as_str()).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut tracked = lock(&tracked);
                tracked.retain(|t| !t.is_finished());
                tracked.push(task);
            }
        });
        let previous = lock(&self.running).replace(Running {
            accept,
            connections,
        });
        if let Some(previous) = previous {
            previous.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.running).take() {
            running.abort();
        }
    }
}

/// The part of a URL between `://` (after any `user:password@`) and the next `/` or `?`.
fn authority_bounds(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = start + rest.find(['/', '?']).unwrap_or(rest.len());
    let host_start = url[start..end]
        .rfind('@')
        .map_or(start, |at| start + at + 1);
    Some((host_start, end))
}

/// `host:port` of a `postgres://` URL, with the default port 5432 when it names none.
pub fn host_port_of(url: &str) -> Option<String> {
    let (start, end) = authority_bounds(url)?;
    let authority = &url[start..end];
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(']') {
        // `[::1]:5432` or `[::1]`
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    Some(if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    })
}

/// `url` with its `host[:port]` replaced by `host_port`.
fn with_authority_host(url: &str, host_port: &str) -> String {
    match authority_bounds(url) {
        Some((start, end)) => format!("{}{host_port}{}", &url[..start], &url[end..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_read_from_postgres_urls() {
        assert_eq!(
            host_port_of("postgres://u:p@localhost:5432/db?sslmode=disable").as_deref(),
            Some("localhost:5432")
        );
        assert_eq!(
            host_port_of("postgres://127.0.0.1/db").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            host_port_of("postgres://u@[::1]:6000/db").as_deref(),
            Some("[::1]:6000")
        );
        assert_eq!(
            host_port_of("postgres://[::1]/db").as_deref(),
            Some("[::1]:5432")
        );
        assert_eq!(host_port_of("postgres:///db"), None);
    }

    #[test]
    fn the_authority_is_replaced_keeping_everything_else() {
        assert_eq!(
            with_authority_host("postgres://u:p@localhost:5432/db?x=1", "127.0.0.1:9"),
            "postgres://u:p@127.0.0.1:9/db?x=1"
        );
        assert_eq!(
            with_authority_host("postgres://h/db", "127.0.0.1:9"),
            "postgres://127.0.0.1:9/db"
        );
    }

    #[tokio::test]
    async fn the_proxy_forwards_stops_and_restarts_on_the_same_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let echo_addr = echo.local_addr().expect("echo addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = TcpProxy::start_to(echo_addr.to_string())
            .await
            .expect("proxy");
        let addr = proxy.addr();

        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");

        proxy.stop().await;
        assert!(!proxy.is_running());
        let mut rest = Vec::new();
        let closed = client.read_to_end(&mut rest).await;
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "live connection must be closed"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "new connections must be refused"
        );

        proxy.start().await.expect("restart");
        assert_eq!(proxy.addr(), addr);
        let mut client = TcpStream::connect(addr).await.expect("reconnect");
        client.write_all(b"pong").await.expect("write");
        client.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"pong");
    }
}
