//! Byte forwarding between the two sides of a proxied connection, with half-close passed on.
use std::{future::Future, io, time::Duration};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::buffers::AdaptiveBuffer;

use crate::telemetry::ObservedConnection;

/// How often a long-lived connection's bytes reach the metrics before it closes.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Copies both ways until both sides are done; an EOF on one side is passed on as a shutdown of
/// the other side's write half, so protocols that half-close keep working. Bytes are counted by
/// the telemetry wrapper around the downstream side.
pub async fn forward<D, U>(downstream: &mut D, upstream: &mut U) -> io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut down_r, mut down_w) = tokio::io::split(downstream);
    let (mut up_r, mut up_w) = tokio::io::split(upstream);
    tokio::try_join!(pump(&mut down_r, &mut up_w), pump(&mut up_r, &mut down_w)).map(|_| ())
}

/// One direction, through a buffer sized to what the direction moves (`buffers::AdaptiveBuffer`):
/// a few KiB while idle or chatty, 64 KiB under bulk (one TLS `writev` of four full records per
/// read, where tokio's 8 KiB cost a record and a syscall per 8 KiB).
async fn pump<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = AdaptiveBuffer::new();
    loop {
        let chunk = buf.get();
        let n = from.read(chunk).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let filled = n == chunk.len();
        to.write_all(&chunk[..n]).await?;
        to.flush().await?;
        buf.read(n, filled);
    }
}

/// Ends a forwarded connection. `app` is the app-facing socket, armed with [`reset`] when the
/// connection was accepted or connected, so that if the agent dies the kernel resets it instead of
/// closing it cleanly: after a clean end it is disarmed and closes with a FIN; after an abnormal
/// end it stays armed and `other` (the socket towards the peer, if plain TCP) is reset too.
pub fn finish(
    result: &io::Result<()>,
    app: &tokio::net::TcpStream,
    other: Option<&tokio::net::TcpStream>,
) {
    match result {
        Ok(()) => {
            let _ = socket2::SockRef::from(app).set_linger(None);
        }
        Err(_) => {
            reset(app);
            other.into_iter().for_each(reset);
        }
    }
}

/// Makes the kernel answer the peer's next move with a reset, and the close a reset: a refused
/// connection, or one whose other side ended abnormally, is visible as such, not as a clean EOF
/// (which a protocol that reads to EOF would take for a complete body).
pub fn reset(stream: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

/// Runs a connection's forwarding to its end, pushing its byte counts into the metrics every few
/// seconds (dashboards see long-lived connections move) and recording an error on the connection.
/// A connection that moved no byte either way for `idle` is ended (as an error: both sides are
/// reset). The result is returned so the caller can pass an abnormal end on as a reset.
pub async fn observe(
    conn: &mut ObservedConnection,
    idle: Duration,
    forwarding: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::pin!(forwarding);
    let every = FLUSH_EVERY.min(idle / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut last_bytes = conn.bytes();
    let mut last_active = tokio::time::Instant::now();
    let mut since_flush = Duration::ZERO;
    loop {
        tokio::select! {
            result = &mut forwarding => {
                if let Err(e) = &result {
                    tracing::debug!(id = conn.id(), error = %e, "connection ended with an error");
                    conn.set_error(e);
                }
                return result;
            }
            now = tick.tick() => {
                since_flush += every;
                if since_flush >= FLUSH_EVERY {
                    since_flush = Duration::ZERO;
                    conn.flush_metrics();
                }
                let bytes = conn.bytes();
                if bytes != last_bytes {
                    (last_bytes, last_active) = (bytes, now);
                } else if now.duration_since(last_active) >= idle {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("idle for {}", humantime::format_duration(idle)),
                    );
                    conn.set_error(&e);
                    return Err(e);
                }
            }
        }
    }
}
