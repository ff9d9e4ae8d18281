//! A TCP proxy for outage tests: it listens on `127.0.0.1:<port>` and forwards every connection
//! to an upstream address (e.g. the test PostgreSQL). [`TcpProxy::stop`] closes the listener and
//! every live connection, as if the database went away; [`TcpProxy::start`] listens again on the
//! same port, so a client configured with the proxy's address recovers without being restarted.
//! Two quieter faults leave the connections open: [`TcpProxy::stall`] forwards nothing in either
//! direction (a network blackhole: packets dropped, no reset, so the client's kernel sees its
//! data acknowledged by the proxy and only a timeout of its own notices) until
//! [`TcpProxy::resume`], which delivers what was held; [`TcpProxy::set_latency`] holds every
//! chunk from the client for a while before sending it on (a slow link or server: one such
//! delay per round trip).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How traffic through the proxy is treated now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mode {
    stalled: bool,
    /// Added to every chunk going from the client to the upstream.
    latency: Duration,
}

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
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    /// Listens on a free port of `127.0.0.1` and forwards to `upstream` (`host:port`).
    pub async fn start_to(upstream: impl Into<String>) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Self {
            addr: listener.local_addr()?,
            upstream: upstream.into(),
            running: Mutex::new(None),
            mode: watch::Sender::new(Mode::default()),
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

    /// A blackhole: from now on nothing is forwarded on any connection, old or new (new ones
    /// are accepted but not connected upstream), and nothing is closed.
    pub fn stall(&self) {
        self.mode.send_modify(|m| m.stalled = true);
    }

    /// Ends a [`TcpProxy::stall`]: what was held is delivered, in order, and forwarding goes on.
    pub fn resume(&self) {
        self.mode.send_modify(|m| m.stalled = false);
    }

    /// Holds every chunk sent by a client for `latency` before forwarding it (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        self.mode.send_modify(|m| m.latency = latency);
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
        let mode = self.mode.subscribe();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    // e.g. out of file descriptors: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let upstream = upstream.clone();
                let mut mode = mode.clone();
                let task = tokio::spawn(async move {
                    if mode.wait_for(|m| !m.stalled).await.is_err() {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(upstream.as_str()).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.split();
                    let (from_upstream, to_upstream) = outbound.into_split();
                    let up = pump(from_client, to_upstream, mode.clone(), true);
                    let down = pump(from_upstream, to_client, mode, false);
                    // Either side closing ends the connection.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
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

/// Forwards `from` to `to` chunk by chunk, holding each while the proxy is stalled, and for the
/// proxy's latency when `delayed`. Ends when either side closes or fails.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut mode: watch::Receiver<Mode>,
    delayed: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let arrived = tokio::time::Instant::now();
        let Ok(now) = mode.wait_for(|m| !m.stalled).await.map(|m| *m) else {
            return;
        };
        if delayed && !now.latency.is_zero() {
            tokio::time::sleep_until(arrived + now.latency).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
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
        let proxy = echo_proxy().await;
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

    async fn echo_proxy() -> TcpProxy {
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
        TcpProxy::start_to(echo_addr.to_string())
            .await
            .expect("proxy")
    }

    #[tokio::test]
    async fn a_stalled_proxy_holds_traffic_without_closing_and_delivers_it_on_resume() {
        let proxy = echo_proxy().await;
        let mut client = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut buf = [0u8; 4];
        client.write_all(b"ping").await.expect("write");
        client.read_exact(&mut buf).await.expect("echo");

        proxy.stall();
        // The write succeeds (the proxy's kernel takes it), the answer never comes.
        client
            .write_all(b"held")
            .await
            .expect("write while stalled");
        let silent =
            tokio::time::timeout(Duration::from_millis(300), client.read_exact(&mut buf)).await;
        assert!(silent.is_err(), "nothing may come back while stalled");
        // A new connection is accepted but goes nowhere either.
        let mut late = TcpStream::connect(proxy.addr()).await.expect("accepted");
        late.write_all(b"late").await.expect("write");

        proxy.resume();
        client
            .read_exact(&mut buf)
            .await
            .expect("held data delivered");
        assert_eq!(&buf, b"held");
        late.read_exact(&mut buf)
            .await
            .expect("late connection forwarded");
        assert_eq!(&buf, b"late");
    }

    #[tokio::test]
    async fn latency_holds_each_request_before_it_is_forwarded() {
        let proxy = echo_proxy().await;
        proxy.set_latency(Duration::from_millis(200));
        let mut client = TcpStream::connect(proxy.addr()).await.expect("connect");
        let mut buf = [0u8; 4];
        for _ in 0..2 {
            let sent = tokio::time::Instant::now();
            client.write_all(b"ping").await.expect("write");
            client.read_exact(&mut buf).await.expect("echo");
            assert!(
                sent.elapsed() >= Duration::from_millis(200),
                "{:?}",
                sent.elapsed()
            );
        }
        proxy.set_latency(Duration::ZERO);
        client.write_all(b"pong").await.expect("write");
        client.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"pong");
    }
}
