//! Receiver misbehaviour below HTTP: a TCP stream that ends in a reset (RST) instead of a clean
//! close when asked to, and a response body that trickles out one byte at a time. Used by the
//! test receiver and by `cargo xtask chaos`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// A TCP stream that, once [`ResetSwitch::arm`] was called, is closed with `SO_LINGER` 0 when
/// dropped: the peer gets a reset instead of an orderly FIN.
pub struct ResettableStream {
    stream: TcpStream,
    armed: Arc<AtomicBool>,
}

/// Arms a [`ResettableStream`]'s reset; the reset happens when the stream is dropped.
#[derive(Clone)]
pub struct ResetSwitch(Arc<AtomicBool>);

impl ResetSwitch {
    pub fn arm(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl ResettableStream {
    pub fn new(stream: TcpStream) -> (Self, ResetSwitch) {
        let armed = Arc::new(AtomicBool::new(false));
        (
            Self {
                stream,
                armed: Arc::clone(&armed),
            },
            ResetSwitch(armed),
        )
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.armed.load(Ordering::SeqCst) {
            // Zero linger: close() discards unsent data and sends RST.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A response body sent one byte every `every`, the first after `every`: a slow-loris answer.
/// Its exact length is announced, so the client waits for all of it.
pub struct Trickle {
    left: Bytes,
    every: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Trickle {
    pub fn new(body: Bytes, every: Duration) -> Self {
        Self {
            left: body,
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.left.is_empty() {
            return Poll::Ready(None);
        }
        ready!(this.sleep.as_mut().poll(cx));
        let next = tokio::time::Instant::now() + this.every;
        this.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(this.left.split_to(1)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(u64::try_from(self.left.len()).unwrap_or(u64::MAX))
    }
}
