use std::time::Duration;

use rustls::HandshakeKind;
use rustls::client::ClientSessionMemoryCache;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::identity::ca::MeshCa;
use crate::identity::issuer::{DEFAULT_TTL, Issuer, test_issuer};
use crate::identity::manager::CertManager;

const SNI: &str = "outbound_.8000_._.httpbin.test2.svc.cluster.local";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

fn sni() -> ServerName<'static> {
    ServerName::try_from(SNI).unwrap()
}

fn fresh_client(issuer: &Issuer, cert: &WorkloadCert) -> Arc<ClientConfig> {
    let sessions = Arc::new(ClientSessionMemoryCache::new(8));
    Arc::new(client_config(cert, issuer.ca().roots(), sessions).unwrap())
}

fn fresh_server(issuer: &Issuer, cert: &WorkloadCert) -> Arc<ServerConfig> {
    let ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    Arc::new(server_config(cert, issuer.ca().roots(), ticketer).unwrap())
}

/// Accepts one connection, echoes until EOF and reports the handshake outcome.
async fn echo_server(
    config: Arc<ServerConfig>,
) -> (u16, tokio::task::JoinHandle<Result<SpiffeId, MeshTlsError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut tls, peer) = accept(config, tcp).await?;
        let mut buf = [0u8; 1024];
        loop {
            let n = tls.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            if tls.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        Ok(peer)
    });
    (port, task)
}

async fn mesh_connect(
    config: Arc<ClientConfig>,
    port: u16,
    expected: &[SpiffeId],
) -> Result<(client::TlsStream<TcpStream>, SpiffeId), MeshTlsError> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    connect(config, sni(), expected, tcp).await
}

async fn echo(tls: &mut client::TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
}

fn serial_of(cert: &[u8]) -> String {
    X509Certificate::from_der(cert)
        .unwrap()
        .1
        .raw_serial_as_string()
}

/// Both test CAs share a subject name, so webpki reports a foreign chain as BadSignature or
/// UnknownIssuer; either way the peer certificate must have been rejected in the handshake.
fn assert_rejected_cert(err: &MeshTlsError, detail: &str) {
    assert!(
        matches!(err, MeshTlsError::Connect { .. } | MeshTlsError::Accept(_)),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("invalid peer certificate") && msg.contains(detail),
        "{msg}"
    );
}

#[tokio::test]
async fn mutual_handshake_sees_both_identities() {
    let (_dir, issuer) = test_issuer();
    let (sleep, httpbin) = (id("test1", "sleep"), id("test2", "httpbin"));
    let server = fresh_server(&issuer, &issuer.issue(&httpbin, DEFAULT_TTL).unwrap());
    let client = fresh_client(&issuer, &issuer.issue(&sleep, DEFAULT_TTL).unwrap());
    let (port, server_task) = echo_server(server).await;
    let expected = [id("test2", "other"), httpbin.clone()];
    let (mut tls, peer) = mesh_connect(client, port, &expected).await.unwrap();
    assert_eq!(peer, httpbin);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(POOLED_ALPN));
    echo(&mut tls, b"hello mesh").await;
    drop(tls);
    assert_eq!(server_task.await.unwrap().unwrap(), sleep);
}

#[tokio::test]
async fn a_sidecar_offering_only_istio_alpn_gets_istio_alpn() {
    let (_dir, issuer) = test_issuer();
    let (sleep, httpbin) = (id("test1", "sleep"), id("test2", "httpbin"));
    let server = fresh_server(&issuer, &issuer.issue(&httpbin, DEFAULT_TTL).unwrap());
    let mut sidecar = (*fresh_client(&issuer, &issuer.issue(&sleep, DEFAULT_TTL).unwrap())).clone();
    sidecar.alpn_protocols = MESH_ALPN.iter().map(|p| p.to_vec()).collect();
    let (port, server_task) = echo_server(server).await;
    let (mut tls, _) = mesh_connect(Arc::new(sidecar), port, &[httpbin])
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"istio-peer-exchange"[..])
    );
    echo(&mut tls, b"hello sidecar").await;
    drop(tls);
    assert_eq!(server_task.await.unwrap().unwrap(), sleep);
}

#[tokio::test]
async fn unexpected_server_identity_is_refused() {
    let (_dir, issuer) = test_issuer();
    let server = fresh_server(
        &issuer,
        &issuer.issue(&id("test2", "httpbin"), DEFAULT_TTL).unwrap(),
    );
    let client = fresh_client(
        &issuer,
        &issuer.issue(&id("test1", "sleep"), DEFAULT_TTL).unwrap(),
    );
    let (port, _server) = echo_server(server).await;
    let err = mesh_connect(client.clone(), port, &[id("test2", "reviews")])
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, MeshTlsError::UnexpectedIdentity { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("spiffe://cluster.local/ns/test2/sa/reviews"),
        "{err}"
    );
    let err = mesh_connect(client, port, &[]).await.err().unwrap();
    assert!(
        matches!(err, MeshTlsError::NoExpectedIdentities { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn foreign_ca_is_refused_by_both_sides() {
    let (_d1, mesh) = test_issuer();
    let (_d2, foreign) = test_issuer();
    let httpbin = id("test2", "httpbin");
    let sleep = id("test1", "sleep");

    // Server certificate from a foreign CA: the client refuses it.
    let server = fresh_server(&foreign, &foreign.issue(&httpbin, DEFAULT_TTL).unwrap());
    let client = fresh_client(&mesh, &mesh.issue(&sleep, DEFAULT_TTL).unwrap());
    let (port, _server) = echo_server(server).await;
    let err = mesh_connect(client, port, std::slice::from_ref(&httpbin))
        .await
        .err()
        .unwrap();
    assert_rejected_cert(&err, "");

    // Client certificate from a foreign CA (trusting the mesh root): the server refuses it.
    let server = fresh_server(&mesh, &mesh.issue(&httpbin, DEFAULT_TTL).unwrap());
    let foreign_cert = foreign.issue(&sleep, DEFAULT_TTL).unwrap();
    let sessions = Arc::new(ClientSessionMemoryCache::new(8));
    let client = Arc::new(client_config(&foreign_cert, mesh.ca().roots(), sessions).unwrap());
    let (port, server_task) = echo_server(server).await;
    if let Ok((mut tls, _)) = mesh_connect(client, port, &[httpbin]).await {
        // TLS 1.3: the client finishes first; the server's rejection arrives on the first read.
        let _ = tls.write_all(b"x").await;
        assert!(tls.read(&mut [0u8; 8]).await.is_err());
    }
    let err = server_task.await.unwrap().err().unwrap();
    assert_rejected_cert(&err, "");
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    let (_dir, issuer) = test_issuer();
    let now = time::OffsetDateTime::now_utc();
    let (past_start, past_end) = (
        now - time::Duration::hours(2),
        now - time::Duration::hours(1),
    );
    let httpbin = id("test2", "httpbin");
    let sleep = id("test1", "sleep");

    let expired_server = issuer
        .issue_with_validity(&httpbin, past_start, past_end)
        .unwrap();
    let client = fresh_client(&issuer, &issuer.issue(&sleep, DEFAULT_TTL).unwrap());
    let (port, _server) = echo_server(fresh_server(&issuer, &expired_server)).await;
    let err = mesh_connect(client, port, std::slice::from_ref(&httpbin))
        .await
        .err()
        .unwrap();
    assert_rejected_cert(&err, "expired");

    let expired_client = issuer
        .issue_with_validity(&sleep, past_start, past_end)
        .unwrap();
    let server = fresh_server(&issuer, &issuer.issue(&httpbin, DEFAULT_TTL).unwrap());
    let (port, server_task) = echo_server(server).await;
    if let Ok((mut tls, _)) =
        mesh_connect(fresh_client(&issuer, &expired_client), port, &[httpbin]).await
    {
        let _ = tls.write_all(b"x").await;
        assert!(tls.read(&mut [0u8; 8]).await.is_err());
    }
    let err = server_task.await.unwrap().err().unwrap();
    assert_rejected_cert(&err, "expired");
}

#[tokio::test]
async fn intermediate_chain_is_served_and_accepted() {
    let dir = tempfile::tempdir().unwrap();
    crate::identity::ca::tests::write_intermediate_layout(
        dir.path(),
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
    );
    let issuer = Issuer::new(Arc::new(MeshCa::load(dir.path()).unwrap()));
    let (sleep, httpbin) = (id("test1", "sleep"), id("test2", "httpbin"));
    let server = fresh_server(&issuer, &issuer.issue(&httpbin, DEFAULT_TTL).unwrap());
    let client = fresh_client(&issuer, &issuer.issue(&sleep, DEFAULT_TTL).unwrap());
    let (port, server_task) = echo_server(server).await;
    let (mut tls, peer) = mesh_connect(client, port, std::slice::from_ref(&httpbin))
        .await
        .unwrap();
    assert_eq!(peer, httpbin);
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap().len(),
        3,
        "leaf + intermediate + root"
    );
    echo(&mut tls, b"via intermediate").await;
    drop(tls);
    assert_eq!(server_task.await.unwrap().unwrap(), sleep);
}

#[tokio::test]
async fn second_connection_resumes_and_keeps_identities() {
    let (_dir, issuer) = test_issuer();
    let (sleep, httpbin) = (id("test1", "sleep"), id("test2", "httpbin"));
    let server = fresh_server(&issuer, &issuer.issue(&httpbin, DEFAULT_TTL).unwrap());
    let client = fresh_client(&issuer, &issuer.issue(&sleep, DEFAULT_TTL).unwrap());
    for expected_kind in [HandshakeKind::Full, HandshakeKind::Resumed] {
        let (port, server_task) = echo_server(server.clone()).await;
        let (mut tls, peer) = mesh_connect(client.clone(), port, std::slice::from_ref(&httpbin))
            .await
            .unwrap();
        // Reading the echo also processes the session tickets the server sent after the handshake.
        echo(&mut tls, b"ping").await;
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected_kind));
        assert_eq!(peer, httpbin);
        drop(tls);
        assert_eq!(server_task.await.unwrap().unwrap(), sleep);
    }
    // A resumed session is still checked against the expected identities.
    let (port, _server) = echo_server(server).await;
    let err = mesh_connect(client, port, &[id("test2", "reviews")])
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, MeshTlsError::UnexpectedIdentity { .. }),
        "{err}"
    );
}

#[test]
fn istio_style_sni_is_a_valid_server_name() {
    assert!(matches!(sni(), ServerName::DnsName(_)));
}

#[tokio::test]
async fn rotation_keeps_open_connections_and_serves_new_cert() {
    let (_dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    let mgr = CertManager::new(Arc::new(issuer), roots, Duration::from_secs(2));
    let (sleep, httpbin) = (id("test1", "sleep"), id("test2", "httpbin"));
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
                let Ok((mut tls, _)) = accept(config, tcp).await else {
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
    let newcomer = mgr.acquire(&id("test1", "newcomer")).unwrap();
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
