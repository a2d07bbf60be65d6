//! The socket under a TLS stream, read in chunks sized to what the connection moves.
//!
//! rustls asks for at most 4 KiB per `read_tls`, so a bulk transfer read straight from the socket
//! would cost a read syscall per 4 KiB. A read buffer in front of the socket makes it one per
//! buffer; the buffer starts small ([`SMALL`]), so an idle or chatty connection costs a few KiB,
//! and grows to [`LARGE`] the first time a read fills it (the peer sends in bulk). Writes pass
//! through.
use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// The read buffer of a new connection.
pub const SMALL: usize = 4 * 1024;
/// The read buffer once the connection moved a full small buffer in one read.
pub const LARGE: usize = 64 * 1024;

/// A TCP stream with an adaptive read buffer.
pub struct BufferedTcp {
    inner: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
}

pub fn buffered(tcp: TcpStream) -> BufferedTcp {
    BufferedTcp {
        inner: tcp,
        buf: vec![0; SMALL].into_boxed_slice(),
        pos: 0,
        filled: 0,
    }
}

impl BufferedTcp {
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    pub fn into_inner(self) -> TcpStream {
        self.inner
    }

    /// Bytes of read buffer held.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

impl AsyncRead for BufferedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.filled {
            let mut fill = ReadBuf::new(&mut this.buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            let n = fill.filled().len();
            (this.pos, this.filled) = (0, n);
            if n == this.buf.len() && n < LARGE {
                let mut larger = vec![0; LARGE].into_boxed_slice();
                larger[..n].copy_from_slice(&this.buf[..n]);
                this.buf = larger;
            }
        }
        let n = (this.filled - this.pos).min(out.remaining());
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BufferedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn starts_small_grows_under_bulk_and_loses_no_byte() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"hello").await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let bulk: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
            s.write_all(&bulk).await.unwrap();
        });
        let mut b = buffered(TcpStream::connect(addr).await.unwrap());
        let mut hello = [0u8; 5];
        b.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"hello");
        assert_eq!(
            b.capacity(),
            SMALL,
            "a small exchange keeps the small buffer"
        );
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        sender.await.unwrap();
        assert_eq!(rest.len(), 200_000);
        assert!(rest.iter().enumerate().all(|(i, &v)| v == i as u8));
        assert_eq!(b.capacity(), LARGE, "bulk grew the buffer");
    }
}
