use rcgen::ExtendedKeyUsagePurpose as Eku;
use rustls::HandshakeKind;
use rustls::client::ClientSessionMemoryCache;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::spiffe::TrustDomains;
use crate::tls::test_pki::{Leaf, TestCa};

const SNI: &str = "outbound_.8000_._.httpbin.test2.svc.cluster.local";
const SLEEP: &str = "spiffe://cluster.local/ns/test1/sa/sleep";
const HTTPBIN: &str = "spiffe://cluster.local/ns/test2/sa/httpbin";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

fn sni() -> ServerName<'static> {
    ServerName::try_from(SNI).unwrap()
}

/// The mesh roots of `ca`, accepting `cluster.local` and `aliases`.
fn trust(ca: &TestCa, aliases: &[&str]) -> MeshTrust {
    let aliases: Vec<String> = aliases.iter().map(ToString::to_string).collect();
    MeshTrust::fixed(
        ca.roots(),
        TrustDomains::new("cluster.local", &aliases).unwrap(),
    )
    .unwrap()
}

fn client_with(leaf: &Leaf, trust: &MeshTrust) -> MeshClientConfig {
    let sessions = Arc::new(ClientSessionMemoryCache::new(8));
    client_config(&leaf.id, &leaf.chain, &leaf.key, trust, sessions).unwrap()
}

fn server_with(leaf: &Leaf, trust: &MeshTrust) -> MeshServerConfig {
    let ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    server_config(&leaf.id, &leaf.chain, &leaf.key, trust, ticketer).unwrap()
}

fn fresh_client(ca: &TestCa, leaf: &Leaf) -> MeshClientConfig {
    client_with(leaf, &trust(ca, &[]))
}

fn fresh_server(ca: &TestCa, leaf: &Leaf) -> MeshServerConfig {
    server_with(leaf, &trust(ca, &[]))
}

/// Accepts one connection, echoes until EOF and reports the handshake outcome.
async fn echo_server(
    config: MeshServerConfig,
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
    config: MeshClientConfig,
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

/// Connects as `client` to an echo server with `server`; returns the client's and the server's
/// outcome. TLS 1.3: the client finishes first, so a client certificate refused by the server
/// shows on the client only at its first read.
async fn handshake(
    client: MeshClientConfig,
    server: MeshServerConfig,
    expected: &[SpiffeId],
) -> (
    Result<SpiffeId, MeshTlsError>,
    Result<SpiffeId, MeshTlsError>,
) {
    let (port, server_task) = echo_server(server).await;
    let client_side = match mesh_connect(client, port, expected).await {
        Ok((mut tls, peer)) => {
            let _ = tls.write_all(b"x").await;
            let mut buf = [0u8; 1];
            match tls.read(&mut buf).await {
                Ok(1) => Ok(peer),
                Ok(_) => Err(MeshTlsError::Accept(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )),
                Err(e) => Err(MeshTlsError::Accept(e)),
            }
        }
        Err(e) => Err(e),
    };
    (client_side, server_task.await.unwrap())
}

#[tokio::test]
async fn mutual_handshake_sees_both_identities() {
    let ca = TestCa::new();
    let (sleep, httpbin) = (ca.leaf(SLEEP), ca.leaf(HTTPBIN));
    let (port, server_task) = echo_server(fresh_server(&ca, &httpbin)).await;
    let expected = [id("test2", "other"), httpbin.id.clone()];
    let (mut tls, peer) = mesh_connect(fresh_client(&ca, &sleep), port, &expected)
        .await
        .unwrap();
    assert_eq!(peer, httpbin.id);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(POOLED_ALPN));
    echo(&mut tls, b"hello mesh").await;
    drop(tls);
    assert_eq!(server_task.await.unwrap().unwrap(), sleep.id);
}

#[tokio::test]
async fn a_sidecar_offering_only_istio_alpn_gets_istio_alpn() {
    let ca = TestCa::new();
    let (sleep, httpbin) = (ca.leaf(SLEEP), ca.leaf(HTTPBIN));
    let mut sidecar = fresh_client(&ca, &sleep);
    let mut rustls = (*sidecar.rustls).clone();
    rustls.alpn_protocols = MESH_ALPN.iter().map(|p| p.to_vec()).collect();
    sidecar.rustls = Arc::new(rustls);
    let (port, server_task) = echo_server(fresh_server(&ca, &httpbin)).await;
    let (mut tls, _) = mesh_connect(sidecar, port, std::slice::from_ref(&httpbin.id))
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"istio-peer-exchange"[..])
    );
    echo(&mut tls, b"hello sidecar").await;
    drop(tls);
    assert_eq!(server_task.await.unwrap().unwrap(), sleep.id);
}

#[tokio::test]
async fn unexpected_server_identity_is_refused() {
    let ca = TestCa::new();
    let server = fresh_server(&ca, &ca.leaf(HTTPBIN));
    let client = fresh_client(&ca, &ca.leaf(SLEEP));
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
    let (mesh, foreign) = (TestCa::new(), TestCa::new());

    // Server certificate from a foreign CA: the client refuses it.
    let httpbin = foreign.leaf(HTTPBIN);
    let (client, server) = handshake(
        fresh_client(&mesh, &mesh.leaf(SLEEP)),
        fresh_server(&foreign, &httpbin),
        std::slice::from_ref(&httpbin.id),
    )
    .await;
    assert_rejected_cert(&client.unwrap_err(), "");
    assert!(server.is_err());

    // Client certificate from a foreign CA (trusting the mesh root): the server refuses it.
    let httpbin = mesh.leaf(HTTPBIN);
    let (client, server) = handshake(
        client_with(&foreign.leaf(SLEEP), &trust(&mesh, &[])),
        fresh_server(&mesh, &httpbin),
        std::slice::from_ref(&httpbin.id),
    )
    .await;
    assert!(client.is_err());
    assert_rejected_cert(&server.unwrap_err(), "");
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    let ca = TestCa::new();
    let now = time::OffsetDateTime::now_utc();
    let past = (
        now - time::Duration::hours(2),
        now - time::Duration::hours(1),
    );
    let both = [Eku::ServerAuth, Eku::ClientAuth];

    let expired_server = ca.leaf_with(HTTPBIN, &both, past);
    let (client, _) = handshake(
        fresh_client(&ca, &ca.leaf(SLEEP)),
        fresh_server(&ca, &expired_server),
        std::slice::from_ref(&expired_server.id),
    )
    .await;
    assert_rejected_cert(&client.unwrap_err(), "expired");

    let httpbin = ca.leaf(HTTPBIN);
    let (client, server) = handshake(
        fresh_client(&ca, &ca.leaf_with(SLEEP, &both, past)),
        fresh_server(&ca, &httpbin),
        std::slice::from_ref(&httpbin.id),
    )
    .await;
    assert!(client.is_err());
    assert_rejected_cert(&server.unwrap_err(), "expired");
}

#[tokio::test]
async fn intermediate_chain_is_served_and_accepted() {
    let ca = TestCa::with_intermediate();
    let (sleep, httpbin) = (ca.leaf(SLEEP), ca.leaf(HTTPBIN));
    let (port, server_task) = echo_server(fresh_server(&ca, &httpbin)).await;
    let (mut tls, peer) = mesh_connect(
        fresh_client(&ca, &sleep),
        port,
        std::slice::from_ref(&httpbin.id),
    )
    .await
    .unwrap();
    assert_eq!(peer, httpbin.id);
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap().len(),
        3,
        "leaf + intermediate + root"
    );
    echo(&mut tls, b"via intermediate").await;
    drop(tls);
    assert_eq!(server_task.await.unwrap().unwrap(), sleep.id);
}

#[tokio::test]
async fn second_connection_resumes_and_keeps_identities() {
    let ca = TestCa::new();
    let (sleep, httpbin) = (ca.leaf(SLEEP), ca.leaf(HTTPBIN));
    let server = fresh_server(&ca, &httpbin);
    let client = fresh_client(&ca, &sleep);
    for expected_kind in [HandshakeKind::Full, HandshakeKind::Resumed] {
        let (port, server_task) = echo_server(server.clone()).await;
        let (mut tls, peer) = mesh_connect(client.clone(), port, std::slice::from_ref(&httpbin.id))
            .await
            .unwrap();
        // Reading the echo also processes the session tickets the server sent after the handshake.
        echo(&mut tls, b"ping").await;
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected_kind));
        assert_eq!(peer, httpbin.id);
        drop(tls);
        assert_eq!(server_task.await.unwrap().unwrap(), sleep.id);
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

const EVIL_SLEEP: &str = "spiffe://evil.local/ns/test1/sa/sleep";
const EVIL_HTTPBIN: &str = "spiffe://evil.local/ns/test2/sa/httpbin";

/// The message names the refused ID and the trust domains that would have been accepted.
fn assert_foreign_domain(err: &MeshTlsError, refused: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "{refused} is outside the accepted trust domains: cluster.local"
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn foreign_trust_domain_signed_by_the_mesh_root_is_refused_both_ways() {
    let ca = TestCa::new();

    // Inbound: a client in evil.local, signed by our root, is refused by the client verifier.
    let httpbin = ca.leaf(HTTPBIN);
    let (client, server) = handshake(
        fresh_client(&ca, &ca.leaf(EVIL_SLEEP)),
        fresh_server(&ca, &httpbin),
        std::slice::from_ref(&httpbin.id),
    )
    .await;
    assert!(client.is_err());
    let server = server.unwrap_err();
    assert_rejected_cert(&server, "");
    assert_foreign_domain(&server, EVIL_SLEEP);

    // Outbound: a server in evil.local is refused even when the caller expects exactly that ID.
    let evil = ca.leaf(EVIL_HTTPBIN);
    let (client, _) = handshake(
        fresh_client(&ca, &ca.leaf(SLEEP)),
        fresh_server(&ca, &evil),
        std::slice::from_ref(&evil.id),
    )
    .await;
    let client = client.unwrap_err();
    assert_rejected_cert(&client, "");
    assert_foreign_domain(&client, EVIL_HTTPBIN);
}

#[tokio::test]
async fn trust_domain_alias_is_accepted_both_ways() {
    let ca = TestCa::new();
    let with_alias = trust(&ca, &["old.local"]);
    let old_sleep = ca.leaf("spiffe://old.local/ns/test1/sa/sleep");
    let old_httpbin = ca.leaf("spiffe://old.local/ns/test2/sa/httpbin");
    let (client, server) = handshake(
        client_with(&old_sleep, &with_alias),
        server_with(&old_httpbin, &with_alias),
        std::slice::from_ref(&old_httpbin.id),
    )
    .await;
    assert_eq!(client.unwrap(), old_httpbin.id);
    assert_eq!(server.unwrap(), old_sleep.id);

    // Without the alias the same certificates are refused, and the message lists the alias set.
    let (client, _) = handshake(
        client_with(&old_sleep, &trust(&ca, &["other.local"])),
        server_with(&old_httpbin, &with_alias),
        std::slice::from_ref(&old_httpbin.id),
    )
    .await;
    let msg = client.unwrap_err().to_string();
    assert!(
        msg.contains("old.local/ns/test2/sa/httpbin")
            && msg.contains("cluster.local (aliases: other.local)"),
        "{msg}"
    );
}

/// Refusals of a client leaf with `client_ekus` (by the server) and of a server leaf with
/// `server_ekus` (by the client); the other side presents a normal leaf.
async fn eku_refusals(client_ekus: &[Eku], server_ekus: &[Eku]) -> (MeshTlsError, MeshTlsError) {
    let ca = TestCa::new();
    let httpbin = ca.leaf(HTTPBIN);
    let (client, inbound) = handshake(
        fresh_client(&ca, &ca.leaf_ekus(SLEEP, client_ekus)),
        fresh_server(&ca, &httpbin),
        std::slice::from_ref(&httpbin.id),
    )
    .await;
    assert!(client.is_err());
    let odd_server = ca.leaf_ekus(HTTPBIN, server_ekus);
    let (outbound, _) = handshake(
        fresh_client(&ca, &ca.leaf(SLEEP)),
        fresh_server(&ca, &odd_server),
        std::slice::from_ref(&odd_server.id),
    )
    .await;
    (inbound.unwrap_err(), outbound.unwrap_err())
}

#[tokio::test]
async fn certificate_without_eku_is_refused_both_ways() {
    let (inbound, outbound) = eku_refusals(&[], &[]).await;
    for (err, role, eku) in [
        (inbound, "client", "clientAuth"),
        (outbound, "server", "serverAuth"),
    ] {
        assert_rejected_cert(&err, "");
        let id = if role == "client" { SLEEP } else { HTTPBIN };
        let want = format!(
            "mesh {role} {id} has a certificate without extended key usage; {eku} is required"
        );
        assert!(err.to_string().contains(&want), "{err}");
    }
}

#[tokio::test]
async fn wrong_eku_is_refused_both_ways() {
    // A client certificate made for servers only, a server certificate made for clients only.
    let (inbound, outbound) = eku_refusals(&[Eku::ServerAuth], &[Eku::ClientAuth]).await;
    assert_rejected_cert(&inbound, "");
    assert_rejected_cert(&outbound, "");
}

/// A session made while `old.local` was accepted must not resume once it is not: the verifier does
/// not run on resumption, so `accept` re-checks the client certificate restored from the ticket.
#[tokio::test]
async fn resumed_session_is_rechecked_on_accept() {
    let ca = TestCa::new();
    let old_sleep = ca.leaf("spiffe://old.local/ns/test1/sa/sleep");
    let httpbin = ca.leaf(HTTPBIN);
    let ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    let server = |trust: &MeshTrust| {
        let leaf = &httpbin;
        server_config(&leaf.id, &leaf.chain, &leaf.key, trust, ticketer.clone()).unwrap()
    };
    let client = fresh_client(&ca, &old_sleep);
    let expected = std::slice::from_ref(&httpbin.id);

    let (port, server_task) = echo_server(server(&trust(&ca, &["old.local"]))).await;
    let (mut tls, _) = mesh_connect(client.clone(), port, expected).await.unwrap();
    echo(&mut tls, b"ticket, please").await;
    drop(tls);
    assert_eq!(server_task.await.unwrap().unwrap(), old_sleep.id);

    // Same identity and ticket key, alias gone.
    let (port, server_task) = echo_server(server(&trust(&ca, &[]))).await;
    let (tls, _) = mesh_connect(client, port, expected).await.unwrap();
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    let err = server_task.await.unwrap().unwrap_err();
    assert!(matches!(err, MeshTlsError::PeerIdentity { .. }), "{err}");
    assert_foreign_domain(&err, "spiffe://old.local/ns/test1/sa/sleep");
}

/// The client side of the same: a session cached while `old.local` was accepted does not get a
/// server in `old.local` through once it is not. rustls resumes a client session only with the
/// verifier that verified it, so here the new config's verifier runs and refuses; `connect`'s own
/// check on the finished connection covers sessions resumed with the same verifier.
#[tokio::test]
async fn cached_session_does_not_outlive_the_trust_domain_on_connect() {
    let ca = TestCa::new();
    let sleep = ca.leaf(SLEEP);
    let old_httpbin = ca.leaf("spiffe://old.local/ns/test2/sa/httpbin");
    let server = server_with(&old_httpbin, &trust(&ca, &[]));
    let sessions: Arc<dyn ClientSessionStore> = Arc::new(ClientSessionMemoryCache::new(8));
    let client = |trust: &MeshTrust| {
        client_config(&sleep.id, &sleep.chain, &sleep.key, trust, sessions.clone()).unwrap()
    };
    let expected = std::slice::from_ref(&old_httpbin.id);

    let with_alias = client(&trust(&ca, &["old.local"]));
    for expected_kind in [HandshakeKind::Full, HandshakeKind::Resumed] {
        let (port, _server) = echo_server(server.clone()).await;
        let (mut tls, _) = mesh_connect(with_alias.clone(), port, expected)
            .await
            .unwrap();
        echo(&mut tls, b"ticket, please").await;
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(expected_kind));
    }

    let (port, _server) = echo_server(server).await;
    let err = mesh_connect(client(&trust(&ca, &[])), port, expected)
        .await
        .err()
        .unwrap();
    assert_foreign_domain(&err, "spiffe://old.local/ns/test2/sa/httpbin");
}

/// A root rotation on live configs: the bundle is swapped under configs built before it, new
/// handshakes follow the bundle (old → both → new), and a connection opened before the last swap
/// keeps working after its root left the bundle.
#[tokio::test]
async fn bundle_swap_applies_to_new_handshakes_and_spares_open_connections() {
    let (old, new) = (TestCa::new(), TestCa::new());
    let domains = || TrustDomains::new("cluster.local", &[]).unwrap();
    let bundle = crate::tls::bundle::TrustBundle::new(old.roots()).unwrap();
    let live = MeshTrust::new(bundle.clone(), domains());
    let httpbin_old = old.leaf(HTTPBIN);
    let server = server_with(&httpbin_old, &live);
    let sleep_new = new.leaf(SLEEP);
    let client_new = client_with(&sleep_new, &trust(&old, &[]));
    let expected = std::slice::from_ref(&httpbin_old.id);

    let (_, server_side) = handshake(client_new.clone(), server.clone(), expected).await;
    assert!(server_side.is_err(), "new root not trusted yet");

    bundle.replace(&[old.root_der(), new.root_der()]).unwrap();
    let (port, task) = echo_server(server.clone()).await;
    let (mut open, _) = mesh_connect(client_new.clone(), port, expected)
        .await
        .unwrap();
    echo(&mut open, b"both roots").await;

    bundle.replace(&[old.root_der()]).unwrap();
    echo(&mut open, b"still open after the swap").await;
    drop(open);
    assert_eq!(task.await.unwrap().unwrap(), sleep_new.id);
    let (_, server_side) = handshake(client_new, server, expected).await;
    assert!(server_side.is_err(), "root removed from the bundle");
}
