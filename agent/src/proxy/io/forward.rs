//! Byte forwarding between the two sides of a proxied connection, with half-close passed on.
use std::{future::Future, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::telemetry::ObservedConnection;

/// Bytes moved per read and write in each direction. tokio's default (8 KiB) costs a TLS record
/// and a syscall per 8 KiB on bulk transfers; the pooled streams' buffer size lets rustls seal four
/// full records into one `writev`.
const COPY_BUFFER: usize = super::buffers::SIZE;

/// How often a long-lived connection's bytes reach the metrics before it closes.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Copies both ways until both sides are done; an EOF on one side is passed on as a shutdown of
/// the other side's write half, so protocols that half-close keep working. Bytes are counted by
/// the telemetry wrapper around the downstream side.
pub async fn forward<D, U>(downstream: &mut D, upstream: &mut U) -> std::io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional_with_sizes(downstream, upstream, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(|_| ())
}

/// Makes the kernel answer the peer's next move with a reset, and the close a reset: a refused
/// connection, or one whose other side ended abnormally, is visible as such, not as a clean EOF
/// (which a protocol that reads to EOF would take for a complete body).
pub fn reset(stream: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

/// Runs a connection's forwarding to its end, pushing its byte counts into the metrics every few
/// seconds (dashboards see long-lived connections move) and recording an error on the connection.
/// The result is returned so the caller can pass an abnormal end on as a reset.
pub async fn observe(
    conn: &mut ObservedConnection,
    forwarding: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::pin!(forwarding);
    let mut flush =
        tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
    loop {
        tokio::select! {
            result = &mut forwarding => {
                if let Err(e) = &result {
                    tracing::debug!(id = conn.id(), error = %e, "connection ended with an error");
                    conn.set_error(e);
                }
                return result;
            }
            _ = flush.tick() => conn.flush_metrics(),
        }
    }
}
