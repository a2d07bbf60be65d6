//! Byte forwarding between the two sides of a proxied connection, with half-close passed on.
use tokio::io::{AsyncRead, AsyncWrite};

/// Copies both ways until both sides are done; an EOF on one side is passed on as a shutdown of
/// the other side's write half, so protocols that half-close keep working. Bytes are counted by
/// the telemetry wrapper around the downstream side.
pub async fn forward<D, U>(downstream: &mut D, upstream: &mut U) -> std::io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional(downstream, upstream)
        .await
        .map(|_| ())
}

/// Makes the kernel answer the client's next move with a reset: a refused connection is visible
/// as such, not as a clean close.
pub fn reset(stream: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}
