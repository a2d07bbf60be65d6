//! The client side: an app's mesh mTLS connection becomes a stream on an idle tunnel to the
//! destination pod's proxy, or on a new mesh connection the caller's dialer makes. A server that
//! does not speak the protocol (an Istio sidecar, an older agent) keeps the new connection to
//! itself, as before.
use std::{future::Future, io, net::SocketAddr, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::{
    MeshConnection, MeshStream,
    frame::{self, Answer},
    pool::{self, PoolKey},
    relay::relay,
};
use crate::{identity::SpiffeId, metrics::RefusalReason, proxy::refusal::Refusal, tls::mesh};

/// The client side's idle tunnels.
#[derive(Default)]
pub struct Tunnels {
    idle: pool::Pool<MeshConnection>,
}

/// What carries an app connection over ISTIO_MUTUAL.
pub enum Carrier<'a> {
    /// A stream on a tunnel, accepted by the peer proxy.
    Stream(TunnelStream<'a>),
    /// A new mesh connection whose server does not tunnel: the app connection's own.
    Dedicated(MeshConnection),
}

/// An accepted stream; after a clean end both ways its connection goes back to the idle tunnels.
pub struct TunnelStream<'a> {
    conn: MeshConnection,
    key: PoolKey,
    tunnels: &'a Tunnels,
}

impl Tunnels {
    /// Opens a stream to `endpoint` on an idle tunnel for `key`, or on a connection `dial` makes.
    /// A reused tunnel that turns out dead (closed by the server while idle) is dropped and
    /// another tried: no app byte has been sent before the stream is accepted.
    pub async fn open<D, F>(
        &self,
        key: PoolKey,
        endpoint: SocketAddr,
        answer_timeout: Duration,
        dial: D,
    ) -> Result<Carrier<'_>, Refusal>
    where
        D: FnOnce() -> F,
        F: Future<Output = Result<MeshConnection, Refusal>>,
    {
        let mut dial = Some(dial);
        loop {
            let (mut conn, reused) = match self.idle.take(&key) {
                Some(conn) => (conn, true),
                None => {
                    // A new connection is never retried, so the dialer runs at most once.
                    let dial = dial.take().expect("dialled at most once");
                    let conn = dial().await?;
                    if !tunnels(&conn.tls) {
                        return Ok(Carrier::Dedicated(conn));
                    }
                    (conn, false)
                }
            };
            match open_stream(&mut conn.tls, endpoint.port(), answer_timeout).await {
                Ok(Answer::Accepted) => {
                    return Ok(Carrier::Stream(TunnelStream {
                        conn,
                        key,
                        tunnels: self,
                    }));
                }
                Ok(Answer::Refused(why)) => {
                    self.idle.put(key, conn);
                    let why = format!("the destination's proxy refused the stream: {why}");
                    return Err(Refusal::new(RefusalReason::UpstreamConnect, why));
                }
                Err(e) if reused => {
                    debug!(%endpoint, error = %e, "pooled connection gone; trying another");
                }
                Err(e) => {
                    let why = format!("opening a stream to {endpoint}: {e}");
                    return Err(Refusal::new(RefusalReason::UpstreamConnect, why));
                }
            }
        }
    }

    /// Closes tunnels idle for longer than [`super::IDLE_TIMEOUT`].
    pub fn reap(&self) {
        self.idle.reap();
    }

    /// Closes every idle tunnel (the agent is draining).
    pub fn clear(&self) {
        self.idle.clear();
    }
}

impl TunnelStream<'_> {
    /// The server proxy's verified identity.
    pub fn peer(&self) -> &SpiffeId {
        &self.conn.peer
    }

    /// Relays the app connection over the stream until both directions ended.
    pub async fn relay<A>(mut self, app: &mut A) -> io::Result<()>
    where
        A: AsyncRead + AsyncWrite + Unpin,
    {
        relay(&mut *self.conn.tls, app).await?;
        self.tunnels.idle.put(self.key, self.conn);
        Ok(())
    }
}

/// The server selected the tunnel protocol.
fn tunnels(tls: &MeshStream) -> bool {
    tls.get_ref().1.alpn_protocol() == Some(mesh::POOLED_ALPN)
}

/// Sends `Open` and waits for the answer, within `timeout`.
async fn open_stream(tls: &mut MeshStream, port: u16, timeout: Duration) -> io::Result<Answer> {
    let exchange = async {
        frame::write_open(tls, port).await?;
        frame::read_answer(tls).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to Open"))?
}
