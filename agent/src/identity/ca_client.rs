//! Workload certificates from a remote CA over Istio's CA API (istiod, or `sockmesh ca`): no key
//! that can sign is on the node.
//!
//! Per request: a fresh key pair and CSR made here ([`super::csr`]), the agent's projected
//! service-account token (read from its file each time, since the kubelet rotates it) as
//! `authorization: Bearer`, the workload's SPIFFE id as `ImpersonatedIdentity` metadata (the node
//! agent asks for the identities of the pods on its node, as ztunnel does in shared mode), the
//! `ClusterID` header. The answer is checked before use: the leaf must name exactly the requested
//! id and chain to one of the roots the CA returned (its self-signed certificates). Those roots
//! become the node's mesh trust bundle ([`TrustBundle::replace`]), so a root rotation on the CA
//! (old → both → new) reaches every node with the next certificate it issues.
//!
//! A request is retried a few times with exponential backoff; renewal (`super::manager`) retries
//! further and keeps serving the certificate it holds until it expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca_api::{
    CLUSTER_ID_HEADER, CREATE_CERTIFICATE_PATH, CertificateRequest, CertificateResponse,
};
use super::csr::workload_csr;
use super::issuer::{CertInfo, IssueError, WorkloadCert, cert_info};
use super::manager::{IssueCert, IssueFuture};
use crate::metrics::Metrics;
use crate::spiffe::{SpiffeId, parse_cert, spiffe_id_in};
use crate::tls::bundle::TrustBundle;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request before the caller (enrollment, renewal) sees the failure.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Where the CA is and how to prove who the agent is.
pub struct CaClientConfig {
    /// `host:port`; the host is also the TLS server name the CA's certificate must carry.
    pub addr: String,
    /// Roots the CA server's TLS certificate may chain to (`--ca-root`), besides the bundle's.
    pub server_roots: Arc<RootCertStore>,
    /// File with the agent's service-account token (audience `istio-ca`).
    pub token_path: std::path::PathBuf,
    pub cluster_id: String,
    /// The node's mesh trust bundle, replaced by the roots each answer carries.
    pub bundle: TrustBundle,
    pub metrics: Arc<Metrics>,
}

/// Why the CA client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("--ca-addr {addr}: {why}")]
    Address { addr: String, why: String },
    #[error("TLS config for the CA at {addr}: {source}")]
    Tls { addr: String, source: rustls::Error },
}

/// The agent's client of a remote CA; cheap to clone.
#[derive(Clone)]
pub struct CaClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: CaClientConfig,
    channel: Channel,
}

/// How one attempt failed: worth retrying or not, and what the metric calls it.
struct Failure {
    result: &'static str,
    retry: bool,
    why: String,
}

impl CaClient {
    /// Connects lazily: the first request dials, a broken connection is redialled.
    pub fn new(config: CaClientConfig) -> Result<Self, CaClientError> {
        let addr = config.addr.clone();
        let bad = |why: String| CaClientError::Address {
            addr: addr.clone(),
            why,
        };
        let host = host_of(&addr).ok_or_else(|| bad("expected host:port".into()))?;
        let server_name =
            ServerName::try_from(host.to_string()).map_err(|e| bad(format!("host: {e}")))?;
        // Checked here so that a dial cannot fail on it later.
        server_tls(&config.server_roots, &config.bundle).map_err(|source| CaClientError::Tls {
            addr: addr.clone(),
            source,
        })?;
        let (server_roots, bundle) = (config.server_roots.clone(), config.bundle.clone());
        let dial_addr = addr.clone();
        let dial = tower::service_fn(move |_: http::Uri| {
            let tls = server_tls(&server_roots, &bundle).map_err(std::io::Error::other);
            let (name, addr) = (server_name.clone(), dial_addr.clone());
            async move {
                let connector = TlsConnector::from(tls?);
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        // TLS is the connector's; the URI only gives the HTTP/2 `:authority`.
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .connect_with_connector_lazy(dial);
        Ok(CaClient {
            inner: Arc::new(Inner { config, channel }),
        })
    }

    /// Requests a certificate for `id`, retrying transient failures with exponential backoff.
    pub async fn request(&self, id: SpiffeId, ttl: Duration) -> Result<WorkloadCert, IssueError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(&id, ttl).await {
                Ok(cert) => {
                    self.inner.config.metrics.ca_request("issued");
                    return Ok(cert);
                }
                Err(failure) => failure,
            };
            self.inner.config.metrics.ca_request(failure.result);
            if !failure.retry || attempt == ATTEMPTS {
                return Err(IssueError::Remote {
                    id,
                    ca: self.inner.config.addr.clone(),
                    why: format!("{} (attempt {attempt} of {ATTEMPTS})", failure.why),
                });
            }
            tracing::debug!(identity = %id, ca = %self.inner.config.addr, why = %failure.why, retry_in = ?backoff, "CA request failed");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn attempt(&self, id: &SpiffeId, ttl: Duration) -> Result<WorkloadCert, Failure> {
        let local = |why: String| Failure {
            result: "unavailable",
            retry: false,
            why,
        };
        let config = &self.inner.config;
        let (key, csr) = workload_csr(id).map_err(|e| local(e.to_string()))?;
        let token = std::fs::read_to_string(&config.token_path)
            .map_err(|e| local(format!("token {}: {e}", config.token_path.display())))?;
        let mut request = tonic::Request::new(CertificateRequest {
            csr,
            validity_duration: ttl.as_secs() as i64,
            metadata: Some(CertificateRequest::impersonating(&id.to_string())),
        });
        let bearer = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|e| local(format!("token {}: {e}", config.token_path.display())))?;
        request.metadata_mut().insert("authorization", bearer);
        let cluster = MetadataValue::try_from(config.cluster_id.as_str())
            .map_err(|e| local(format!("cluster id: {e}")))?;
        request.metadata_mut().insert(CLUSTER_ID_HEADER, cluster);

        let mut grpc = tonic::client::Grpc::new(self.inner.channel.clone());
        let unavailable = |why: String| Failure {
            result: "unavailable",
            retry: true,
            why,
        };
        grpc.ready()
            .await
            .map_err(|e| unavailable(format!("connecting: {e}")))?;
        let response: tonic::Response<CertificateResponse> = grpc
            .unary(
                request,
                PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|status| status_failure(&status))?;
        let (cert, roots) =
            parse_response(id, key, &response.into_inner().cert_chain).map_err(|why| Failure {
                result: "invalid_response",
                retry: false,
                why,
            })?;
        match config.bundle.replace(&roots) {
            Ok(true) => {
                tracing::info!(roots = roots.len(), ca = %config.addr, "mesh trust bundle replaced by the CA's")
            }
            Ok(false) => {}
            Err(e) => {
                return Err(Failure {
                    result: "invalid_response",
                    retry: false,
                    why: e.to_string(),
                });
            }
        }
        Ok(cert)
    }
}

impl IssueCert for CaClient {
    fn issue(&self, id: &SpiffeId, ttl: Duration) -> IssueFuture {
        let (client, id) = (self.clone(), id.clone());
        Box::pin(async move { client.request(id, ttl).await })
    }
}

/// TLS towards the CA, built per dial: its certificate must chain to `--ca-root` or to a root of
/// the mesh bundle as it is now. The bundle comes from the CA's own answers, so after the "both
/// roots" step of a rotation the CA may serve a certificate of the new root to agents whose
/// `--ca-root` still names only the old one.
fn server_tls(
    server_roots: &RootCertStore,
    bundle: &TrustBundle,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut roots = server_roots.clone();
    roots
        .roots
        .extend(bundle.current().roots().roots.iter().cloned());
    let mut tls = ClientConfig::builder_with_provider(crate::crypto::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(tls))
}

fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(host)
}

/// A refusal by the CA is final for this attempt; transport trouble is retried.
fn status_failure(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let refused = matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
    );
    Failure {
        result: if refused { "refused" } else { "unavailable" },
        retry: !refused,
        why: format!("{:?}: {}", status.code(), status.message()),
    }
}

/// The leaf (checked: only `id`, chains to a returned root), the chain to serve (leaf and
/// intermediates) and the roots (the self-signed certificates of the answer).
pub(crate) fn parse_response(
    id: &SpiffeId,
    key: rcgen::KeyPair,
    pems: &[String],
) -> Result<(WorkloadCert, Vec<CertificateDer<'static>>), String> {
    let mut certs = Vec::new();
    for (index, pem) in pems.iter().enumerate() {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            certs.push(cert.map_err(|e| format!("cert_chain[{index}]: bad PEM: {e}"))?);
        }
    }
    let (leaf, rest) = certs
        .split_first()
        .ok_or_else(|| "empty cert_chain".to_string())?;
    let mut roots = Vec::new();
    let mut chain = vec![leaf.clone()];
    for cert in rest {
        if is_self_signed(cert)? {
            roots.push(cert.clone());
        } else {
            chain.push(cert.clone());
        }
    }
    if roots.is_empty() {
        return Err("cert_chain has no root (no self-signed certificate)".into());
    }
    let parsed = parse_cert(leaf).map_err(|e| format!("leaf: {e}"))?;
    let got = spiffe_id_in(&parsed).map_err(|e| format!("leaf: {e}"))?;
    if &got != id {
        return Err(format!("leaf is for {got}, requested {id}"));
    }
    let mut store = RootCertStore::empty();
    for root in &roots {
        store
            .add(root.clone())
            .map_err(|e| format!("root is not a trust anchor: {e}"))?;
    }
    let leaf_parsed = ParsedCertificate::try_from(leaf).map_err(|e| format!("leaf: {e}"))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &leaf_parsed,
        &store,
        &chain[1..],
        UnixTime::now(),
        crate::crypto::provider()
            .signature_verification_algorithms
            .all,
    )
    .map_err(|e| format!("leaf does not chain to the returned roots: {e}"))?;
    let info: CertInfo = cert_info(id, leaf)?;
    let not_after = parsed.validity().not_after.to_datetime().into();
    let cert = WorkloadCert {
        id: id.clone(),
        chain,
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        issued_at: SystemTime::now(),
        not_after,
        info,
    };
    Ok((cert, roots))
}

fn is_self_signed(der: &CertificateDer<'_>) -> Result<bool, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.subject() == cert.issuer() && cert.verify_signature(None).is_ok())
}

#[cfg(test)]
#[path = "ca_client_tests.rs"]
mod tests;
