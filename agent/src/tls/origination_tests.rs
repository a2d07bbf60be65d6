use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A CA outside the mesh, as a TLS server in test3 would have.
struct ExternalCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ExternalCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        ExternalCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (cert PEM, key PEM) for `dns` with the given EKU.
    fn leaf(&self, dns: &str, eku: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![dns.to_string()]).unwrap();
        params.extended_key_usages = vec![eku];
        (
            params.signed_by(&key, &self.issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        Arc::new(roots)
    }
}

/// Serves one echo connection with a cert for `httpbin.test3.svc`; optionally requires client certs.
async fn tls_server(ca: &ExternalCa, client_ca: Option<&ExternalCa>) -> u16 {
    let (cert, key) = ca.leaf("httpbin.test3.svc", ExtendedKeyUsagePurpose::ServerAuth);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(client_ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(client_ca.roots(), provider())
                .build()
                .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(Arc::new(config))
            .accept(tcp)
            .await
        else {
            return;
        };
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = tls.read(&mut buf).await {
            if tls.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    port
}

fn simple(ca_pem: &str) -> OriginationSettings {
    OriginationSettings {
        mode: OriginationMode::Simple,
        ca_certificates: Some(ca_pem.as_bytes().to_vec()),
        client_certificate: None,
        private_key: None,
        subject_alt_names: vec![],
        insecure_skip_verify: false,
    }
}

/// Connects and exchanges one message; the error is the handshake's or the first read's.
async fn round_trip(settings: &OriginationSettings, port: u16, sni: &str) -> Result<(), String> {
    let config = build(settings).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connect(Arc::new(config), name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"hi").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"hi");
    Ok(())
}

#[tokio::test]
async fn simple_needs_right_ca_and_sni() {
    let ca = ExternalCa::new("test3 CA");
    let other = ExternalCa::new("other CA");
    let ok = simple(&ca.pem);
    round_trip(&ok, tls_server(&ca, None).await, "httpbin.test3.svc")
        .await
        .unwrap();

    let err = round_trip(&ok, tls_server(&ca, None).await, "wrong.test3.svc")
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");

    let wrong_ca = simple(&other.pem);
    let err = round_trip(&wrong_ca, tls_server(&ca, None).await, "httpbin.test3.svc")
        .await
        .unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn subject_alt_names_replace_the_host_name_check() {
    let ca = ExternalCa::new("test3 CA");
    let mut with_san = simple(&ca.pem);
    with_san.subject_alt_names = vec!["httpbin.test3.svc".into()];
    round_trip(&with_san, tls_server(&ca, None).await, "alias.example")
        .await
        .unwrap();

    with_san.subject_alt_names = vec!["reviews.test3.svc".into()];
    let err = round_trip(&with_san, tls_server(&ca, None).await, "httpbin.test3.svc")
        .await
        .unwrap_err();
    assert!(err.contains("reviews.test3.svc"), "{err}");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_unknown_ca() {
    let ca = ExternalCa::new("test3 CA");
    let other = ExternalCa::new("other CA");
    let mut insecure = simple(&other.pem);
    insecure.insecure_skip_verify = true;
    round_trip(&insecure, tls_server(&ca, None).await, "anything.example")
        .await
        .unwrap();
}

#[tokio::test]
async fn mutual_presents_client_certificate() {
    let server_ca = ExternalCa::new("test3 CA");
    let client_ca = ExternalCa::new("client CA");
    let (cert, key) = client_ca.leaf("sleep.test1", ExtendedKeyUsagePurpose::ClientAuth);
    let mut mutual = simple(&server_ca.pem);
    mutual.mode = OriginationMode::Mutual;
    mutual.client_certificate = Some(cert.into_bytes());
    mutual.private_key = Some(key.into_bytes());
    let port = tls_server(&server_ca, Some(&client_ca)).await;
    round_trip(&mutual, port, "httpbin.test3.svc")
        .await
        .unwrap();

    let port = tls_server(&server_ca, Some(&client_ca)).await;
    let err = round_trip(&simple(&server_ca.pem), port, "httpbin.test3.svc")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    mutual.private_key = None;
    assert!(matches!(
        build(&mutual),
        Err(OriginationError::MissingClientCert)
    ));
}

#[test]
fn settings_errors() {
    let mut no_ca = simple("");
    no_ca.ca_certificates = None;
    let err = build(&no_ca).err().unwrap();
    assert!(err.to_string().contains("caCertificates"), "{err}");
    let err = build(&simple("not pem")).err().unwrap();
    assert!(err.to_string().contains("caCertificates"), "{err}");

    let ca = ExternalCa::new("test3 CA");
    let mut with_key = simple(&ca.pem);
    with_key.private_key = Some(b"secret".to_vec());
    assert!(!format!("{with_key:?}").contains("secret"));
}
