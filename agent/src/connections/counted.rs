//! A stream wrapper that counts bytes into a tracked connection's counters, so the existing
//! forwarder (`copy_bidirectional`) needs no change and the admin API sees live byte counts.
use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Live byte counters of one connection (one writer each, so `Relaxed` is enough).
#[derive(Debug, Default)]
pub(super) struct LiveBytes {
    pub(super) received: AtomicU64,
    pub(super) sent: AtomicU64,
}

/// Wraps the *source-side* stream: bytes read from it were received from the source, bytes
/// written to it were sent to the source. Wrapping the destination side swaps the two.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    bytes: Arc<LiveBytes>,
    destination_side: bool,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S, bytes: Arc<LiveBytes>, destination_side: bool) -> Self {
        Self {
            inner,
            bytes,
            destination_side,
        }
    }

    /// The counter for bytes read from the wrapped stream.
    fn read_counter(&self) -> &AtomicU64 {
        if self.destination_side {
            &self.bytes.sent
        } else {
            &self.bytes.received
        }
    }

    /// The counter for bytes written to the wrapped stream.
    fn write_counter(&self) -> &AtomicU64 {
        if self.destination_side {
            &self.bytes.received
        } else {
            &self.bytes.sent
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Counts bytes read from the source that bypassed `poll_read` (zero-copy forwarding).
    pub fn add_received(&self, n: u64) {
        self.bytes.received.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes written to the source that bypassed `poll_write` (zero-copy forwarding).
    pub fn add_sent(&self, n: u64) {
        self.bytes.sent.fetch_add(n, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read_counter().fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.write_counter().fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
