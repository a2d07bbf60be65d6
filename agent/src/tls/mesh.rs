//! The ISTIO_MUTUAL profile: both sides present workload certificates chaining to the mesh root.
//!
//! Configs are built once per identity and certificate rotation (see `identity::manager`), never per
//! connection. The client's expected server identities differ per connection (the endpoint's service
//! accounts or a rule's `subjectAltNames`), but a rustls `ServerCertVerifier` is fixed in the config.
//! So the verifier in the shared config checks only what is the same for every connection (chain to
//! the mesh root and the mesh peer rules of [`super::peer`]: a SPIFFE ID in our trust domain or an
//! alias, the serverAuth EKU), and [`connect`] checks the peer's SPIFFE ID against the expected set
//! on the finished connection's `peer_certificates()` before handing the stream out, so no
//! application byte reaches an unexpected server. This also covers resumed sessions (rustls restores
//! the server chain from the ticket), which a verifier would never see, and keeps one session cache
//! per source identity instead of one per (identity, SAN set).
//!
//! Inbound is the same: the server config's client verifier refuses client certificates outside the
//! trust domains or without the clientAuth EKU in the handshake, and [`accept`] checks the finished
//! connection's client certificate again, because a resumed session restores it from a session
//! ticket without running the verifier. That is why [`MeshServerConfig`] and [`MeshClientConfig`]
//! carry the trust (bundle and accepted trust domains) next to the rustls config: rustls does not
//! expose its verifier. A resumed session's chain is also verified again against the bundle as it
//! is at that moment, so a root removed from the bundle admits no resumed session either.

use std::io;
use std::sync::Arc;

use rustls::client::{ClientSessionStore, Resumption};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ProducesTickets;
use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::peer::{MeshTrust, PeerCertError, PeerRole, check_peer_leaf};
use super::verify::{MeshClientVerifier, MeshServerVerifier, verify_chain};
use crate::crypto::provider;
use crate::spiffe::{SpiffeError, SpiffeId};

/// ALPN as Istio sidecars send it for mesh mTLS, so sidecars and this proxy can talk to each other.
pub const MESH_ALPN: [&[u8]; 2] = [b"istio-peer-exchange", b"istio"];

/// ALPN of sockmesh's pooled connections (`proxy::pooled`). Offered and preferred before Istio's, so
/// two sockmesh proxies pool and a sidecar on either side picks Istio's.
pub const POOLED_ALPN: &[u8] = b"sockmesh-pooled/1";

/// Offered by clients and preferred in this order by servers.
fn alpn_protocols() -> Vec<Vec<u8>> {
    std::iter::once(POOLED_ALPN)
        .chain(MESH_ALPN)
        .map(<[u8]>::to_vec)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum MeshTlsError {
    #[error("building mesh TLS config for {id}: {source}")]
    Config { id: SpiffeId, source: rustls::Error },
    #[error("mesh TLS handshake with {server} failed: {source}")]
    Connect { server: String, source: io::Error },
    #[error(
        "mesh peer {peer}: the resumed session's certificate does not chain to the trust bundle: {source}"
    )]
    ResumedChain { peer: String, source: rustls::Error },
    #[error("mesh TLS accept failed: {0}")]
    Accept(io::Error),
    #[error("mesh peer {peer} refused: {source}")]
    PeerIdentity { peer: String, source: PeerCertError },
    #[error("mesh server {server} is {got}, expected one of [{}]", expected.join(", "))]
    UnexpectedIdentity {
        server: String,
        got: SpiffeId,
        expected: Vec<String>,
    },
    #[error("no expected identities given for mesh server {server}; refusing to connect")]
    NoExpectedIdentities { server: String },
}

/// Inbound mesh config of one identity: the rustls config and the trust its client verifier
/// applies, which [`accept`] checks again on resumed sessions. Cheap to clone.
#[derive(Clone)]
pub struct MeshServerConfig {
    rustls: Arc<ServerConfig>,
    trust: MeshTrust,
}

/// Outbound mesh config of one identity; see [`MeshServerConfig`]. Cheap to clone.
#[derive(Clone)]
pub struct MeshClientConfig {
    rustls: Arc<ClientConfig>,
    trust: MeshTrust,
}

impl MeshServerConfig {
    /// The rustls config itself (one per identity and certificate generation).
    pub fn rustls(&self) -> &Arc<ServerConfig> {
        &self.rustls
    }
}

impl MeshClientConfig {
    /// The rustls config itself (one per identity and certificate generation).
    pub fn rustls(&self) -> &Arc<ClientConfig> {
        &self.rustls
    }
}

/// Inbound config presenting `chain` (leaf first) for `id`: client certificates must chain to
/// `trust.roots`, be in `trust.domains` and carry the clientAuth EKU.
pub fn server_config(
    id: &SpiffeId,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    trust: &MeshTrust,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<MeshServerConfig, MeshTlsError> {
    let verifier = MeshClientVerifier {
        roots: trust.roots.clone(),
        domains: trust.domains.clone(),
        provider: provider(),
    };
    let config_err = |source| MeshTlsError::Config {
        id: id.clone(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(config_err)?;
    config.alpn_protocols = alpn_protocols();
    config.ticketer = ticketer;
    Ok(MeshServerConfig {
        rustls: Arc::new(config),
        trust: trust.clone(),
    })
}

/// Outbound config presenting `chain` for `id`, resuming sessions from `sessions`. rustls resumes a
/// session only with the verifier and client certificate that made it, so sessions do not survive
/// a rotation (each rotation builds both anew) and a resumed server was verified under this
/// config's trust domains. Server certificates must chain to `trust.roots`, be in `trust.domains` and carry
/// the serverAuth EKU.
pub fn client_config(
    id: &SpiffeId,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    trust: &MeshTrust,
    sessions: Arc<dyn ClientSessionStore>,
) -> Result<MeshClientConfig, MeshTlsError> {
    let config_err = |source| MeshTlsError::Config {
        id: id.clone(),
        source,
    };
    let verifier = MeshServerVerifier {
        roots: trust.roots.clone(),
        domains: trust.domains.clone(),
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain.to_vec(), key.clone_key())
        .map_err(config_err)?;
    config.alpn_protocols = alpn_protocols();
    config.resumption = Resumption::store(sessions);
    Ok(MeshClientConfig {
        rustls: Arc::new(config),
        trust: trust.clone(),
    })
}

/// Handshakes as the config's identity and returns the stream only if the server is one of `expected`.
///
/// `server_name` is sent as SNI (e.g. `outbound_.8000_._.httpbin.test2.svc.cluster.local`) and keys
/// the resumption cache; an IP address sends no SNI.
pub async fn connect<IO>(
    config: MeshClientConfig,
    server_name: ServerName<'static>,
    expected: &[SpiffeId],
    io: IO,
) -> Result<(client::TlsStream<IO>, SpiffeId), MeshTlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let server = server_name.to_str().into_owned();
    if expected.is_empty() {
        return Err(MeshTlsError::NoExpectedIdentities { server });
    }
    let stream = TlsConnector::from(config.rustls)
        .connect(server_name, io)
        .await
        .map_err(|source| MeshTlsError::Connect {
            server: server.clone(),
            source,
        })?;
    let conn = stream.get_ref().1;
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let certs = conn.peer_certificates();
    let peer = peer_identity(certs, PeerRole::Server, &config.trust, resumed, &server)?;
    if !expected.contains(&peer) {
        return Err(MeshTlsError::UnexpectedIdentity {
            server,
            got: peer,
            expected: expected.iter().map(ToString::to_string).collect(),
        });
    }
    Ok((stream, peer))
}

/// Terminates mesh mTLS with the destination identity's config and returns the client's identity.
/// The client certificate is checked again here (trust domain, EKU) for resumed sessions.
pub async fn accept<IO>(
    config: MeshServerConfig,
    io: IO,
) -> Result<(server::TlsStream<IO>, SpiffeId), MeshTlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = TlsAcceptor::from(config.rustls)
        .accept(io)
        .await
        .map_err(MeshTlsError::Accept)?;
    let conn = stream.get_ref().1;
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let certs = conn.peer_certificates();
    let peer = peer_identity(certs, PeerRole::Client, &config.trust, resumed, "client")?;
    Ok((stream, peer))
}

/// The finished connection's peer identity, with the mesh peer rules applied to its leaf. A
/// resumed session's chain is verified again against the bundle as it is now: no verifier ran, and
/// the bundle may have lost the root that chain was verified under (a finished root rotation).
fn peer_identity(
    certs: Option<&[CertificateDer<'static>]>,
    role: PeerRole,
    trust: &MeshTrust,
    resumed: bool,
    peer: &str,
) -> Result<SpiffeId, MeshTlsError> {
    let refused = |source| MeshTlsError::PeerIdentity {
        peer: peer.to_string(),
        source,
    };
    let (leaf, intermediates) = certs
        .and_then(|c| c.split_first())
        .ok_or_else(|| refused(SpiffeError::NoSpiffeSan(Vec::new()).into()))?;
    if resumed {
        let bundle = trust.roots.current();
        let now = UnixTime::now();
        let chained = match role {
            PeerRole::Client => bundle
                .client_verifier()
                .verify_client_cert(leaf, intermediates, now)
                .map(drop),
            PeerRole::Server => verify_chain(bundle.roots(), &provider(), leaf, intermediates, now),
        };
        chained.map_err(|source| MeshTlsError::ResumedChain {
            peer: peer.to_string(),
            source,
        })?;
    }
    check_peer_leaf(leaf, role, &trust.domains).map_err(refused)
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;
