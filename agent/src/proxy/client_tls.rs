//! Applying the client-side TLS mode of a route to a connected upstream socket.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{
    buffered::{BufferedTcp, buffered},
    route::Route,
};
use crate::{
    identity::{SpiffeId, WorkloadIdentity},
    policy::{TlsMode, decision::CertSource},
    tls::{
        mesh,
        origination::{self, OriginationConfigs, OriginationMode, OriginationSettings},
    },
};

/// The upstream after the client TLS mode was applied.
pub enum Upstream {
    /// DISABLE: the application's bytes as they are.
    Plain(TcpStream),
    /// ISTIO_MUTUAL: mesh mTLS with the source workload's identity; the server's verified identity.
    Mesh(Box<TlsStream<BufferedTcp>>, SpiffeId),
    /// SIMPLE or MUTUAL origination with the rule's certificates.
    Originated(Box<TlsStream<BufferedTcp>>),
}

/// Why the upstream TLS set-up failed; the connection is refused.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error(transparent)]
    Mesh(#[from] mesh::MeshTlsError),
    #[error(transparent)]
    Origination(#[from] origination::OriginationError),
    #[error("reading {field} {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("invalid SNI {0:?}")]
    Sni(String),
    #[error("TLS handshake with {0} timed out")]
    Timeout(SocketAddr),
}

pub async fn secure(
    tcp: TcpStream,
    route: &Route,
    source: &WorkloadIdentity,
    origination: &OriginationConfigs,
    timeout: Duration,
) -> Result<Upstream, ClientTlsError> {
    let client = &route.client;
    let sni = match server_name(client.sni.as_deref(), route.endpoint) {
        // Mesh identity is checked by SPIFFE ID, not by name: an SNI that is not a valid DNS name
        // (e.g. built from a pod IP) is left out rather than failing the connection.
        Err(_) if client.mode == TlsMode::IstioMutual => {
            ServerName::IpAddress(route.endpoint.ip().into())
        }
        other => other?,
    };
    let handshake = async {
        match client.mode {
            TlsMode::Disable => Ok(Upstream::Plain(tcp)),
            TlsMode::IstioMutual => {
                let (tls, peer) =
                    mesh::connect(source.client_config(), sni, &route.expected, buffered(tcp))
                        .await?;
                tracing::debug!(endpoint = %route.endpoint, kind = ?tls.get_ref().1.handshake_kind(), "mesh handshake");
                Ok(Upstream::Mesh(Box::new(tls), peer))
            }
            TlsMode::Simple | TlsMode::Mutual => {
                let config = origination.get(&settings(route)?)?;
                Ok(Upstream::Originated(Box::new(
                    origination::connect(config, sni, buffered(tcp)).await?,
                )))
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ClientTlsError::Timeout(route.endpoint))?
}

/// The rule's SNI, or the endpoint address (which sends no SNI).
fn server_name(
    sni: Option<&str>,
    endpoint: SocketAddr,
) -> Result<ServerName<'static>, ClientTlsError> {
    match sni {
        Some(name) => {
            ServerName::try_from(name.to_owned()).map_err(|_| ClientTlsError::Sni(name.to_owned()))
        }
        None => Ok(ServerName::IpAddress(endpoint.ip().into())),
    }
}

fn settings(route: &Route) -> Result<OriginationSettings, ClientTlsError> {
    let c = &route.client;
    Ok(OriginationSettings {
        mode: if c.mode == TlsMode::Mutual {
            OriginationMode::Mutual
        } else {
            OriginationMode::Simple
        },
        ca_certificates: pem("caCertificates", c.ca_certificates.as_ref())?,
        client_certificate: pem("clientCertificate", c.client_certificate.as_ref())?,
        private_key: pem("privateKey", c.private_key.as_ref())?,
        subject_alt_names: c.subject_alt_names.clone(),
        insecure_skip_verify: c.insecure_skip_verify,
    })
}

fn pem(
    field: &'static str,
    source: Option<&CertSource>,
) -> Result<Option<Vec<u8>>, ClientTlsError> {
    match source {
        None => Ok(None),
        Some(CertSource::Pem(bytes)) => Ok(Some(Arc::unwrap_or_clone(bytes.clone()))),
        Some(CertSource::File(path)) => {
            std::fs::read(path)
                .map(Some)
                .map_err(|source| ClientTlsError::Read {
                    field,
                    path: path.clone(),
                    source,
                })
        }
    }
}
