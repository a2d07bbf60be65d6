//! Pooled mesh connections: mesh mTLS connections between two proxies that carry the app
//! connections of one source pod to one destination pod one after another, so a new connection
//! skips the node-to-node TCP and TLS handshakes. Both proxies agree on it with the ALPN protocol
//! `tls::mesh::POOLED_ALPN`, offered next to Istio's; a peer that does not select it gets one
//! connection per app connection, as Istio sidecars do.
mod frame;
pub mod inbound;
pub mod outbound;
mod pool;
mod relay;

pub use pool::{IDLE_TIMEOUT, Pool};

/// The client side of a mesh connection, as the pool keeps it.
pub type MeshStream = tokio_rustls::client::TlsStream<super::buffered::BufferedTcp>;
