//! Tunnels: mesh mTLS connections between two proxies that carry the app connections of one
//! source pod to one destination pod one after another, so a new connection skips the
//! node-to-node TCP and TLS handshakes. Both proxies agree on the protocol with the ALPN
//! `tls::mesh::POOLED_ALPN` (`sockmesh-pooled/1`), offered next to Istio's; a peer that does not
//! select it keeps the connection to itself, as Istio sidecars do.
//!
//! This is the transport seam: the client side ([`Tunnels::open`]) is handed a dialer and never
//! calls back into the outbound stages; the server side ([`server::serve`]) is handed a stream
//! opener that applies inbound admission. HBONE (HTTP/2 CONNECT) sits here next to it.
//!
//! The frames carry no stream id: one stream at a time per connection. Multiplexing and
//! node-level pooling come with HBONE, whose HTTP/2 streams have ids and whose CONNECT names
//! the target address; giving the private protocol the same would only make a `/2` to retire.
mod client;
/// Public so the `tunnel_frame` fuzz target can decode frames from untrusted bytes.
pub mod frame;
mod pool;
/// Public so the `tunnel_frame` fuzz target can relay a stream read from untrusted bytes.
pub mod relay;
pub mod server;

use tokio_rustls::client::TlsStream;

use super::io::buffered::BufferedTcp;
use crate::identity::SpiffeId;

pub use client::{Carrier, TunnelStream, Tunnels};
pub use pool::{IDLE_TIMEOUT, PoolKey};

/// The client side of a mesh connection.
pub type MeshStream = TlsStream<BufferedTcp>;

/// A mesh mTLS connection to a peer proxy, with the server identity verified when it was made.
pub struct MeshConnection {
    pub tls: Box<MeshStream>,
    pub peer: SpiffeId,
}

impl tokio::io::AsyncRead for MeshConnection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.tls).poll_read(cx, buf)
    }
}
