//! The secure stage for a dedicated upstream: connect to the route's endpoint from the source
//! pod's netns and apply the route's client TLS mode.
use std::{net::SocketAddr, time::Duration};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{
    credentials::{CredentialError, Credentials},
    request::OutboundRequest,
    route::Route,
};
use crate::{
    identity::WorkloadIdentity,
    metrics::RefusalReason,
    policy::TlsMode,
    proxy::{
        Proxy,
        io::{
            buffered::{BufferedTcp, buffered},
            upstream::connect_in,
        },
        refusal::Refusal,
        tunnel::MeshConnection,
    },
    tls::{
        mesh,
        origination::{self},
    },
};

/// The upstream after the client TLS mode was applied.
pub enum Secured {
    /// DISABLE: the application's bytes as they are.
    Plain(TcpStream),
    /// ISTIO_MUTUAL: mesh mTLS with the source workload's identity; the server's verified identity.
    Mesh(MeshConnection),
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
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("invalid SNI {0:?}")]
    Sni(String),
    #[error("TLS handshake with {0} timed out")]
    Timeout(SocketAddr),
}

/// A new upstream connection for the request, secured as its route says.
pub async fn dial(proxy: &Proxy, request: &OutboundRequest) -> Result<Secured, Refusal> {
    let route = &request.route;
    let tcp = connect_in(
        &request.source.netns,
        route.endpoint,
        proxy.timeouts.connect,
    )
    .await
    .map_err(|e| {
        Refusal::new(
            RefusalReason::UpstreamConnect,
            format!("connect {}: {e}", route.endpoint),
        )
    })?;
    let secured = secure(
        tcp,
        route,
        &request.source.identity,
        &proxy.credentials,
        proxy.timeouts.handshake,
    )
    .await;
    secured.map_err(|e| {
        proxy.telemetry.metrics.handshake_failed("upstream");
        Refusal::new(RefusalReason::UpstreamHandshake, e)
    })
}

async fn secure(
    tcp: TcpStream,
    route: &Route,
    source: &WorkloadIdentity,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<Secured, ClientTlsError> {
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
            TlsMode::Disable => Ok(Secured::Plain(tcp)),
            TlsMode::IstioMutual => {
                let (tls, peer) =
                    mesh::connect(source.client_config(), sni, &route.expected, buffered(tcp))
                        .await?;
                tracing::debug!(endpoint = %route.endpoint, kind = ?tls.get_ref().1.handshake_kind(), "mesh handshake");
                Ok(Secured::Mesh(MeshConnection {
                    tls: Box::new(tls),
                    peer,
                }))
            }
            TlsMode::Simple | TlsMode::Mutual => {
                let config = credentials.config(client).await?;
                Ok(Secured::Originated(Box::new(
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
