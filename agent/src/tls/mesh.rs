//! The ISTIO_MUTUAL profile: both sides present workload certificates chaining to the mesh root.
//!
//! Configs are built once per identity and certificate rotation (see `identity::manager`), never per
//! connection. The client's expected server identities differ per connection (the endpoint's service
//! accounts or a rule's `subjectAltNames`), but a rustls `ServerCertVerifier` is fixed in the config.
//! So the verifier in the shared config checks only what is the same for every connection (chain to
//! the mesh root, serverAuth EKU, a SPIFFE URI SAN), and [`connect`] checks the peer's SPIFFE ID
//! against the expected set on the finished connection's `peer_certificates()` before handing the
//! stream out, so no application byte reaches an unexpected server. This also covers resumed sessions
//! (rustls restores the server chain from the ticket), which a verifier would never see, and keeps
//! one session cache per source identity instead of one per (identity, SAN set).

use std::io;
use std::sync::Arc;

use rustls::client::{ClientSessionStore, Resumption};
use rustls::pki_types::ServerName;
use rustls::server::{ProducesTickets, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use super::provider;
use super::verify::MeshServerVerifier;
use crate::identity::issuer::WorkloadCert;
use crate::identity::spiffe::{SpiffeError, SpiffeId, spiffe_id_of};

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
    #[error("building mesh client-certificate verifier for {id}: {source}")]
    Verifier {
        id: SpiffeId,
        source: VerifierBuilderError,
    },
    #[error("mesh TLS handshake with {server} failed: {source}")]
    Connect { server: String, source: io::Error },
    #[error("mesh TLS accept failed: {0}")]
    Accept(io::Error),
    #[error("mesh peer {peer} has no usable identity: {source}")]
    PeerIdentity { peer: String, source: SpiffeError },
    #[error("mesh server {server} is {got}, expected one of [{}]", expected.join(", "))]
    UnexpectedIdentity {
        server: String,
        got: SpiffeId,
        expected: Vec<String>,
    },
    #[error("no expected identities given for mesh server {server}; refusing to connect")]
    NoExpectedIdentities { server: String },
}

/// Inbound config for `cert`'s identity: client certificates must chain to `roots`.
pub fn server_config(
    cert: &WorkloadCert,
    roots: Arc<RootCertStore>,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<ServerConfig, MeshTlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|source| MeshTlsError::Verifier {
            id: cert.id.clone(),
            source,
        })?;
    let config_err = |source| MeshTlsError::Config {
        id: cert.id.clone(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(config_err)?;
    config.alpn_protocols = alpn_protocols();
    config.ticketer = ticketer;
    Ok(config)
}

/// Outbound config presenting `cert`; `sessions` is kept across rotations so resumption survives them.
pub fn client_config(
    cert: &WorkloadCert,
    roots: Arc<RootCertStore>,
    sessions: Arc<dyn ClientSessionStore>,
) -> Result<ClientConfig, MeshTlsError> {
    let config_err = |source| MeshTlsError::Config {
        id: cert.id.clone(),
        source,
    };
    let verifier = MeshServerVerifier {
        roots,
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(config_err)?;
    config.alpn_protocols = alpn_protocols();
    config.resumption = Resumption::store(sessions);
    Ok(config)
}

/// Handshakes as the config's identity and returns the stream only if the server is one of `expected`.
///
/// `server_name` is sent as SNI (e.g. `outbound_.8000_._.httpbin.test2.svc.cluster.local`) and keys
/// the resumption cache; an IP address sends no SNI.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
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
    let stream = TlsConnector::from(config)
        .connect(server_name, io)
        .await
        .map_err(|source| MeshTlsError::Connect {
            server: server.clone(),
            source,
        })?;
    let peer = peer_identity(stream.get_ref().1.peer_certificates(), &server)?;
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
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> Result<(server::TlsStream<IO>, SpiffeId), MeshTlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(MeshTlsError::Accept)?;
    let peer = peer_identity(stream.get_ref().1.peer_certificates(), "client")?;
    Ok((stream, peer))
}

fn peer_identity(
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    peer: &str,
) -> Result<SpiffeId, MeshTlsError> {
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or_else(|| MeshTlsError::PeerIdentity {
            peer: peer.to_string(),
            source: SpiffeError::NoSpiffeSan(Vec::new()),
        })?;
    spiffe_id_of(leaf).map_err(|source| MeshTlsError::PeerIdentity {
        peer: peer.to_string(),
        source,
    })
}

#[cfg(test)]
#[path = "mesh_tests.rs"]
mod tests;
