//! The gRPC server: TLS (ALPN `h2`) with a serving certificate signed by the plug-in CA, HTTP/2,
//! and the one method of Istio's CA API; any other path answers `UNIMPLEMENTED`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::authorize::PodDirectory;
use super::service::CertificateService;
use crate::identity::MeshCa;
use crate::identity::ca_api::{CREATE_CERTIFICATE_PATH, CertificateRequest, CertificateResponse};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const SERVING_CERT_VALIDITY: time::Duration = time::Duration::days(365);

/// The server's TLS config: a leaf for `names` (DNS names, or IP addresses) signed by `ca`.
pub fn serving_config(ca: &MeshCa, names: &[String]) -> anyhow::Result<Arc<ServerConfig>> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "sockmesh ca");
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = (now + SERVING_CERT_VALIDITY).min(ca.not_after());
    let leaf = params.signed_by(&key, ca.issuer())?;
    let mut chain = vec![leaf.der().clone()];
    chain.extend(ca.chain().iter().cloned());
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(crate::crypto::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `listener` until the task is aborted.
pub async fn serve<P: PodDirectory>(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    service: Arc<CertificateService<P>>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "CA accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // gRPC writes a response as several small frames: without this, Nagle's algorithm holds
        // the last one back for the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let (acceptor, service) = (acceptor.clone(), service.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "CA TLS handshake failed"),
                Err(_) => return debug!(%peer, "CA TLS handshake timed out"),
            };
            let handler = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(route(service, req).await) }
            });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), handler)
                .await
            {
                debug!(%peer, error = %e, "CA connection ended with an error");
            }
        });
    }
}

async fn route<P: PodDirectory>(
    service: Arc<CertificateService<P>>,
    req: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    if req.uri().path() != CREATE_CERTIFICATE_PATH {
        return tonic::Status::unimplemented(format!("no method {}", req.uri().path())).into_http();
    }
    let codec = tonic_prost::ProstCodec::<CertificateResponse, CertificateRequest>::default();
    tonic::server::Grpc::new(codec)
        .unary(CreateCertificate(service), req)
        .await
}

struct CreateCertificate<P>(Arc<CertificateService<P>>);

type Answer = Result<tonic::Response<CertificateResponse>, tonic::Status>;

impl<P: PodDirectory> tonic::server::UnaryService<CertificateRequest> for CreateCertificate<P> {
    type Response = CertificateResponse;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&mut self, request: tonic::Request<CertificateRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.create_certificate(request).await })
    }
}
