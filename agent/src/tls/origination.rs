//! DestinationRule SIMPLE and MUTUAL TLS origination towards servers outside the mesh.
//!
//! Configs are built once per distinct settings and cached; SNI is given per connection.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::verify::{other_cert_error, verify_chain};
use crate::crypto::provider;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OriginationMode {
    Simple,
    Mutual,
}

/// A rule's client TLS settings, with PEM contents already read from files or a `credentialName`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OriginationSettings {
    pub mode: OriginationMode,
    pub ca_certificates: Option<Vec<u8>>,
    pub client_certificate: Option<Vec<u8>>,
    pub private_key: Option<Vec<u8>>,
    /// When non-empty, the server must carry one of these SANs (DNS, URI or IP, exact match) and the
    /// SNI host name is not checked, as in Istio.
    pub subject_alt_names: Vec<String>,
    pub insecure_skip_verify: bool,
}

impl fmt::Debug for OriginationSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginationSettings")
            .field("mode", &self.mode)
            .field(
                "ca_certificates",
                &self.ca_certificates.as_ref().map(Vec::len),
            )
            .field(
                "client_certificate",
                &self.client_certificate.as_ref().map(Vec::len),
            )
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("subject_alt_names", &self.subject_alt_names)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OriginationError {
    #[error("{mode:?} TLS origination: caCertificates: {why}")]
    Ca { mode: OriginationMode, why: String },
    #[error("MUTUAL TLS origination needs both clientCertificate and privateKey")]
    MissingClientCert,
    #[error("MUTUAL TLS origination: {field}: {why}")]
    ClientCert { field: &'static str, why: String },
    #[error("{mode:?} TLS origination config: {source}")]
    Config {
        mode: OriginationMode,
        source: Error,
    },
    #[error("TLS origination to {server} failed: {source}")]
    Connect { server: String, source: io::Error },
}

/// How the server certificate is checked; signatures on the handshake are always verified.
#[derive(Debug)]
enum Check {
    /// Chain to the rule's CA and host name = SNI.
    Hostname(Arc<WebPkiServerVerifier>),
    /// Chain to the rule's CA and one of the rule's `subjectAltNames`.
    Sans {
        roots: Arc<RootCertStore>,
        sans: Vec<String>,
    },
    /// `insecureSkipVerify`: the rule explicitly accepts any server certificate.
    Insecure,
}

#[derive(Debug)]
struct OriginationVerifier {
    check: Check,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for OriginationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match &self.check {
            Check::Hostname(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            Check::Sans { roots, sans } => {
                verify_chain(roots, &self.provider, end_entity, intermediates, now)?;
                let presented = cert_sans(end_entity).map_err(other_cert_error)?;
                let matches = presented
                    .iter()
                    .any(|p| sans.iter().any(|want| want.eq_ignore_ascii_case(p)));
                if matches {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(other_cert_error(SanMismatch {
                        presented,
                        expected: sans.clone(),
                    }))
                }
            }
            Check::Insecure => Ok(ServerCertVerified::assertion()),
        }
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

#[derive(Debug, thiserror::Error)]
#[error("server SANs {presented:?} match none of subjectAltNames {expected:?}")]
struct SanMismatch {
    presented: Vec<String>,
    expected: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("unparseable server certificate: {0}")]
struct BadCert(String);

/// DNS, URI and IP SANs as strings, for exact comparison with `subjectAltNames`.
fn cert_sans(der: &CertificateDer<'_>) -> Result<Vec<String>, BadCert> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| BadCert(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| BadCert(e.to_string()))?;
    let names = san
        .map(|ext| ext.value.general_names.as_slice())
        .unwrap_or_default();
    Ok(names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) | GeneralName::URI(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

fn roots_from_pem(
    mode: OriginationMode,
    pem: &[u8],
) -> Result<Arc<RootCertStore>, OriginationError> {
    let ca_err = |why: String| OriginationError::Ca { mode, why };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| ca_err(format!("bad PEM: {e}")))?;
        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_err("no CERTIFICATE block".into()));
    }
    Ok(Arc::new(roots))
}

/// Builds a client config; `proxy::outbound::Credentials` caches what it builds.
pub fn build(settings: &OriginationSettings) -> Result<ClientConfig, OriginationError> {
    let mode = settings.mode;
    let check = match (&settings.ca_certificates, settings.insecure_skip_verify) {
        (_, true) => Check::Insecure,
        (None, false) => {
            return Err(OriginationError::Ca {
                mode,
                why: "not set; give caCertificates or set insecureSkipVerify".into(),
            });
        }
        (Some(pem), false) if settings.subject_alt_names.is_empty() => {
            let roots = roots_from_pem(mode, pem)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| OriginationError::Ca {
                    mode,
                    why: e.to_string(),
                })?;
            Check::Hostname(webpki)
        }
        (Some(pem), false) => Check::Sans {
            roots: roots_from_pem(mode, pem)?,
            sans: settings.subject_alt_names.clone(),
        },
    };
    let verifier = Arc::new(OriginationVerifier {
        check,
        provider: provider(),
    });
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| OriginationError::Config { mode, source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match mode {
        OriginationMode::Simple => Ok(builder.with_no_client_auth()),
        OriginationMode::Mutual => {
            let (Some(cert_pem), Some(key_pem)) =
                (&settings.client_certificate, &settings.private_key)
            else {
                return Err(OriginationError::MissingClientCert);
            };
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| OriginationError::ClientCert {
                    field: "clientCertificate",
                    why: e.to_string(),
                })?;
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
                OriginationError::ClientCert {
                    field: "privateKey",
                    why: e.to_string(),
                }
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| OriginationError::Config { mode, source })
        }
    }
}

/// Handshakes with `server_name` as SNI (an IP address sends none).
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    io: IO,
) -> Result<client::TlsStream<IO>, OriginationError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let server = server_name.to_str().into_owned();
    TlsConnector::from(config)
        .connect(server_name, io)
        .await
        .map_err(|source| OriginationError::Connect { server, source })
}

#[cfg(test)]
#[path = "origination_tests.rs"]
mod tests;
