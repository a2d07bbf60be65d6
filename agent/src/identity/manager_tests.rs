use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::identity::issuer::{DEFAULT_TTL, test_issuer};
use crate::spiffe::TrustDomains;

/// The mesh roots with `cluster.local` and no alias.
fn trust(roots: Arc<rustls::RootCertStore>) -> MeshTrust {
    MeshTrust::fixed(roots, TrustDomains::new("cluster.local", &[]).unwrap()).unwrap()
}

fn id(s: &str) -> SpiffeId {
    format!("spiffe://cluster.local/ns/{s}/sa/{s}")
        .parse()
        .unwrap()
}

fn manager(ttl: Duration) -> (tempfile::TempDir, CertManager) {
    let (dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    (dir, CertManager::new(Arc::new(issuer), trust(roots), ttl))
}

#[tokio::test]
async fn refcount_keeps_identity_until_last_release() {
    let (_dir, mgr) = manager(DEFAULT_TTL);
    let a = id("a");
    let first = mgr.acquire(&a).unwrap();
    let second = mgr.acquire(&a).unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "second pod must share the first pod's identity"
    );
    assert!(!mgr.release(&a));
    assert!(mgr.get(&a).is_some());
    assert!(mgr.release(&a));
    assert!(mgr.get(&a).is_none());
    assert!(!mgr.release(&a));
    assert!(mgr.cert_infos().is_empty());
}

#[tokio::test]
async fn identities_get_distinct_certs_and_configs() {
    let (_dir, mgr) = manager(DEFAULT_TTL);
    let a = mgr.acquire(&id("a")).unwrap();
    let b = mgr.acquire(&id("b")).unwrap();
    let (ca, cb) = (a.current(), b.current());
    assert_ne!(ca.info().serial, cb.info().serial);
    assert_eq!(ca.info().sans, vec![id("a").to_string()]);
    assert_eq!(cb.info().sans, vec![id("b").to_string()]);
    assert!(!Arc::ptr_eq(
        a.server_config().rustls(),
        b.server_config().rustls()
    ));
    assert!(
        Arc::ptr_eq(a.client_config().rustls(), a.client_config().rustls()),
        "configs are built once per generation, not per call"
    );
    let infos = mgr.cert_infos();
    assert_eq!(
        infos.iter().map(|i| i.identity.clone()).collect::<Vec<_>>(),
        vec![id("a").to_string(), id("b").to_string()]
    );
    assert!(infos[0].issuer.contains("sockmesh mesh root CA"));
}

/// Fails the calls numbered in `failing` (1-based), delegating the rest to a real issuer.
struct FlakyIssuer {
    inner: Issuer,
    calls: AtomicUsize,
    failing: std::ops::RangeInclusive<usize>,
}

impl IssueCert for FlakyIssuer {
    fn issue(&self, id: &SpiffeId, ttl: Duration) -> IssueFuture {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.failing.contains(&call) {
            return Box::pin(std::future::ready(Err(IssueError::Sign {
                id: id.clone(),
                why: "CA unavailable".into(),
            })));
        }
        IssueCert::issue(&self.inner, id, ttl)
    }
}

async fn wait_for_serial_change(identity: &WorkloadIdentity, old: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if identity.current().info().serial != old {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn renews_at_half_life_and_survives_failures() {
    let (_dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    let flaky = Arc::new(FlakyIssuer {
        inner: issuer,
        calls: AtomicUsize::new(0),
        failing: 2..=3,
    });
    let mgr = CertManager::new(flaky.clone(), trust(roots), Duration::from_secs(2));
    let identity = mgr.acquire(&id("a")).unwrap();
    let first = identity.current().info().serial.clone();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while flaky.calls.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewal attempt at half-life"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read the serial before the call count: if the successful 4th call had not started by then,
    // the serial seen must still be the first one.
    let serial = identity.current().info().serial.clone();
    if flaky.calls.load(Ordering::SeqCst) < 4 {
        assert_eq!(serial, first, "old cert kept on failure");
    }

    assert!(wait_for_serial_change(&identity, &first, Duration::from_secs(4)).await);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn release_stops_renewal() {
    let (_dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    let counting = Arc::new(FlakyIssuer {
        inner: issuer,
        calls: AtomicUsize::new(0),
        failing: 0..=0,
    });
    let mgr = CertManager::new(counting.clone(), trust(roots), Duration::from_millis(400));
    mgr.acquire(&id("a")).unwrap();
    assert!(mgr.release(&id("a")));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
}

const SNI: &str = "outbound_.8000_._.httpbin.test2.svc.cluster.local";

async fn mesh_connect(
    config: MeshClientConfig,
    port: u16,
    expected: &[SpiffeId],
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, SpiffeId), MeshTlsError> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let sni = rustls::pki_types::ServerName::try_from(SNI).unwrap();
    mesh::connect(config, sni, expected, tcp).await
}

async fn echo(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

fn serial_of(cert: &[u8]) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(cert)
        .unwrap()
        .1
        .raw_serial_as_string()
}

/// The manager's configs in real handshakes: a rotation keeps open connections and new handshakes
/// see the new certificate.
#[tokio::test]
async fn rotation_keeps_open_connections_and_serves_new_cert() {
    let (_dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    let mgr = CertManager::new(Arc::new(issuer), trust(roots), Duration::from_secs(2));
    let (sleep, httpbin) = (id("sleep"), id("httpbin"));
    let server_identity = mgr.acquire(&httpbin).unwrap();
    let client_identity = mgr.acquire(&sleep).unwrap();
    let old_serial = server_identity.current().info().serial.clone();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_identity_for_accept = server_identity.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let config = server_identity_for_accept.server_config();
            tokio::spawn(async move {
                let Ok((mut tls, _)) = mesh::accept(config, tcp).await else {
                    return;
                };
                let mut buf = [0u8; 256];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    let (mut old_conn, _) = mesh_connect(
        client_identity.client_config(),
        port,
        std::slice::from_ref(&httpbin),
    )
    .await
    .unwrap();
    let served = serial_of(&old_conn.get_ref().1.peer_certificates().unwrap()[0]);
    assert_eq!(served, old_serial);
    echo(&mut old_conn, b"before rotation").await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server_identity.current().info().serial == old_serial {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_serial = server_identity.current().info().serial.clone();
    echo(&mut old_conn, b"after rotation, same connection").await;

    // A client with no cached session makes a full handshake and must see the new certificate.
    let newcomer = mgr.acquire(&id("newcomer")).unwrap();
    let (mut new_conn, _) = mesh_connect(newcomer.client_config(), port, &[httpbin])
        .await
        .unwrap();
    assert_eq!(
        new_conn.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    let served = serial_of(&new_conn.get_ref().1.peer_certificates().unwrap()[0]);
    assert_eq!(served, new_serial);
    echo(&mut new_conn, b"new cert").await;
    echo(&mut old_conn, b"old connection still fine").await;
}
