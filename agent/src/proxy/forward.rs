//! Byte forwarding between the two sides of a proxied connection, with half-close passed on.
use tokio::io::{AsyncRead, AsyncWrite};

/// Bytes moved in each direction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Transferred {
    pub to_upstream: u64,
    pub to_downstream: u64,
}

/// Copies both ways until both sides are done; an EOF on one side is passed on as a shutdown of
/// the other side's write half, so protocols that half-close keep working.
pub async fn forward<D, U>(downstream: &mut D, upstream: &mut U) -> std::io::Result<Transferred>
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (to_upstream, to_downstream) = tokio::io::copy_bidirectional(downstream, upstream).await?;
    Ok(Transferred {
        to_upstream,
        to_downstream,
    })
}
