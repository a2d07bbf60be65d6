//! Certificate verification: the chain check shared by the mesh and origination profiles, and the
//! two mesh verifiers, which add the mesh peer rules of [`super::peer`] to the chain check.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

use super::bundle::TrustBundle;
use super::peer::{PeerRole, check_peer_leaf};
use crate::spiffe::TrustDomains;

/// Verifies the chain against `roots` (with the serverAuth EKU) but not the server name.
pub(crate) fn verify_chain(
    roots: &RootCertStore,
    provider: &CryptoProvider,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), Error> {
    let cert = ParsedCertificate::try_from(end_entity)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &cert,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )
}

pub(crate) fn other_cert_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Mesh servers are identified by SPIFFE URI SAN, never by DNS name, so the name check is replaced
/// by the mesh peer rules (SPIFFE ID in an accepted trust domain, serverAuth EKU); which ID is
/// acceptable is decided per connection (see `tls::mesh`).
#[derive(Debug)]
pub(crate) struct MeshServerVerifier {
    pub(crate) roots: TrustBundle,
    pub(crate) domains: Arc<TrustDomains>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        verify_chain(
            self.roots.current().roots(),
            &self.provider,
            end_entity,
            intermediates,
            now,
        )?;
        check_peer_leaf(end_entity, PeerRole::Server, &self.domains).map_err(other_cert_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Inbound mesh client certificates: webpki's chain check (the bundle's current roots, clientAuth
/// EKU when present), then the mesh peer rules (SPIFFE ID in an accepted trust domain, clientAuth EKU
/// required). No root hints are sent (the bundle may change under the config): mesh clients present
/// their one certificate anyway.
#[derive(Debug)]
pub(crate) struct MeshClientVerifier {
    pub(crate) roots: TrustBundle,
    pub(crate) domains: Arc<TrustDomains>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for MeshClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.roots.current().client_verifier().verify_client_cert(
            end_entity,
            intermediates,
            now,
        )?;
        check_peer_leaf(end_entity, PeerRole::Client, &self.domains).map_err(other_cert_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
