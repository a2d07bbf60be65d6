//! Who may be a mesh peer: a certificate chaining to the mesh roots is not enough. Its SPIFFE ID
//! must be in our trust domain or one of its aliases, and its leaf must carry the extended key usage
//! of its role (clientAuth for a client, serverAuth for a server).
//!
//! [`check_peer_leaf`] runs in both mesh verifiers (`tls::verify`), so a foreign peer fails the
//! handshake itself, and again on every finished connection (`tls::mesh::{connect, accept}`), because
//! a resumed session restores the peer's chain from a ticket or the client's session cache and no
//! verifier sees it.
//!
//! **EKU decision.** RFC 5280 §4.2.1.12 lets a certificate without the extension be used for any
//! purpose, and the usual verifiers follow it: rustls-webpki's `KeyUsage::client_auth()` and
//! `server_auth()` are "required if present", and Envoy's default validator (BoringSSL's purpose
//! check) accepts a client certificate with no EKU (istio/istio#47708 shows such a certificate
//! passing an Istio gateway's MUTUAL check while one with the wrong EKU is refused). So Istio
//! sidecars and ztunnel refuse a wrong EKU but accept a missing one. sockmesh is stricter and refuses
//! both: every mesh CA we interoperate with (Istio's, ours in `identity::issuer`, SPIRE) issues workload
//! certificates with clientAuth and serverAuth, so a leaf without the extension was not made for mesh
//! mTLS (the soak test found such certificates accepted), and refusing it costs no real peer.

use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use x509_parser::prelude::X509Certificate;

use super::bundle::{BundleError, TrustBundle};
use crate::spiffe::{SpiffeError, SpiffeId, TrustDomains, parse_cert, spiffe_id_in};

/// What a mesh config trusts: the roots peers chain to (a live bundle, read at each handshake) and
/// the trust domains their IDs may be in.
#[derive(Debug, Clone)]
pub struct MeshTrust {
    pub roots: TrustBundle,
    pub domains: Arc<TrustDomains>,
}

impl MeshTrust {
    pub fn new(roots: TrustBundle, domains: TrustDomains) -> Self {
        MeshTrust {
            roots,
            domains: Arc::new(domains),
        }
    }

    /// A fixed set of roots (tests, and configs that never rotate).
    pub fn fixed(roots: Arc<RootCertStore>, domains: TrustDomains) -> Result<Self, BundleError> {
        Ok(Self::new(TrustBundle::new(roots)?, domains))
    }
}

/// The peer's side of the handshake, which decides the extended key usage its leaf must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Client,
    Server,
}

impl PeerRole {
    fn eku(self) -> &'static str {
        match self {
            PeerRole::Client => "clientAuth",
            PeerRole::Server => "serverAuth",
        }
    }
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerRole::Client => "client",
            PeerRole::Server => "server",
        })
    }
}

/// Why a peer certificate that chains to the mesh roots is still not a mesh peer.
#[derive(thiserror::Error, PartialEq, Eq)]
pub enum PeerCertError {
    #[error(transparent)]
    NoIdentity(#[from] SpiffeError),
    #[error("mesh {role} {id} is outside the accepted trust domains: {accepted}")]
    ForeignTrustDomain {
        role: PeerRole,
        id: SpiffeId,
        accepted: Arc<TrustDomains>,
    },
    #[error(
        "mesh {role} {id} has a certificate without extended key usage; {} is required",
        role.eku()
    )]
    NoExtendedKeyUsage { role: PeerRole, id: SpiffeId },
    #[error("mesh {role} {id} has a certificate whose extended key usage lacks {}", role.eku())]
    WrongExtendedKeyUsage { role: PeerRole, id: SpiffeId },
    #[error("mesh {role} certificate has an unreadable extended key usage: {why}")]
    BadExtendedKeyUsage { role: PeerRole, why: String },
}

/// rustls prints a verifier's `CertificateError::Other` with `{:?}`; Debug is the message, so the
/// handshake error names the rejected ID and the accepted trust domains.
impl fmt::Debug for PeerCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The SPIFFE ID of a peer's leaf certificate (DER) if it may be a mesh peer in `role`. Does not
/// verify the chain: the verifiers do that before calling this.
pub fn check_peer_leaf(
    leaf: &[u8],
    role: PeerRole,
    domains: &Arc<TrustDomains>,
) -> Result<SpiffeId, PeerCertError> {
    let cert = parse_cert(leaf)?;
    let id = spiffe_id_in(&cert)?;
    if !domains.accepts(&id) {
        return Err(PeerCertError::ForeignTrustDomain {
            role,
            id,
            accepted: domains.clone(),
        });
    }
    check_eku(&cert, role, id)
}

fn check_eku(
    cert: &X509Certificate<'_>,
    role: PeerRole,
    id: SpiffeId,
) -> Result<SpiffeId, PeerCertError> {
    let eku = cert
        .extended_key_usage()
        .map_err(|e| PeerCertError::BadExtendedKeyUsage {
            role,
            why: e.to_string(),
        })?;
    let Some(eku) = eku else {
        return Err(PeerCertError::NoExtendedKeyUsage { role, id });
    };
    // `anyExtendedKeyUsage` does not count, as in webpki: the purpose must be named.
    let allowed = match role {
        PeerRole::Client => eku.value.client_auth,
        PeerRole::Server => eku.value.server_auth,
    };
    if allowed {
        Ok(id)
    } else {
        Err(PeerCertError::WrongExtendedKeyUsage { role, id })
    }
}
