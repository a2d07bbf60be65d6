//! `sockmesh ca` as a process, asked by the agent's own CA client (the library's `CaClient` and
//! `CertManager`, over real TLS and gRPC): the node authorizer (own identity, node agents only for
//! pods on their node), refusals logged and counted, the trust bundle following the CA's roots
//! (old → both → new), and certificates kept through a CA outage and renewed after it.
//!
//! TokenReview and the pod lookups are answered by the test bed's API server (`testbed::ApiServer`,
//! the stand-in for kube-apiserver, which cannot run here); everything else is real.
mod ca_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_support::{CaProcess, bound, metric_in};
use rustls::RootCertStore;
use sockmesh_agent::identity::ca_client::{CaClient, CaClientConfig};
use sockmesh_agent::identity::{CertManager, MeshCa, SpiffeId};
use sockmesh_agent::metrics::Metrics;
use sockmesh_agent::spiffe::TrustDomains;
use sockmesh_agent::tls::bundle::TrustBundle;
use sockmesh_agent::tls::peer::MeshTrust;

const PODS: [ca_support::PodFixture; 3] = [
    ("test1", "sleep-a", "sleep", "node-a"),
    ("test2", "httpbin-b", "httpbin", "node-b"),
    ("sockmesh-system", "agent-a", "sockmesh-agent", "node-a"),
];

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

struct Client {
    ca: CaClient,
    bundle: TrustBundle,
    metrics: Arc<Metrics>,
}

/// A CA client for `addr` presenting `token`, trusting the roots in `server_roots` for the CA.
fn client(work: &Path, addr: &str, token: &str, server_roots: &[&MeshCa]) -> Client {
    let token_path = work.join(format!("token-{}", token));
    std::fs::write(&token_path, token).unwrap();
    let mut roots = RootCertStore::empty();
    for ca in server_roots {
        for root in ca.root_certs() {
            roots.add(root.clone()).unwrap();
        }
    }
    let roots = Arc::new(roots);
    let bundle = TrustBundle::new(roots.clone()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let ca = CaClient::new(CaClientConfig {
        addr: addr.to_string(),
        server_roots: roots,
        token_path,
        cluster_id: "Kubernetes".into(),
        bundle: bundle.clone(),
        metrics: metrics.clone(),
    })
    .unwrap();
    Client {
        ca,
        bundle,
        metrics,
    }
}

fn plug_in_ca(dir: &Path) -> MeshCa {
    MeshCa::load_or_create(dir, "cluster.local").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_gets_identities_of_pods_on_its_node_only() {
    let work = tempfile::tempdir().unwrap();
    let ca_dir = work.path().join("cacerts");
    let ca = plug_in_ca(&ca_dir);
    let api = ca_support::api(work.path(), None, PODS.to_vec());
    let server = CaProcess::start(&ca_dir, &api, work.path(), None, &[]);
    let agent_token = api.issue_token(bound(
        "sockmesh-system",
        "sockmesh-agent",
        "agent-a",
        "node-a",
    ));
    let agent = client(work.path(), &server.addr.to_string(), &agent_token, &[&ca]);
    let ttl = Duration::from_secs(600);

    let sleep = id("spiffe://cluster.local/ns/test1/sa/sleep");
    let started = Instant::now();
    let cert = agent.ca.request(sleep.clone(), ttl).await.unwrap();
    let first = started.elapsed();
    let started = Instant::now();
    agent.ca.request(sleep.clone(), ttl).await.unwrap();
    println!(
        "CA request: {first:?} with dial and TLS, {:?} on the open connection",
        started.elapsed()
    );
    assert_eq!(cert.info.identity, sleep.to_string());
    assert_eq!(cert.chain.len(), 1, "leaf only: the CA is its own root");
    assert_eq!(agent.bundle.current().roots().len(), 1);
    let life = cert.not_after.duration_since(cert.issued_at).unwrap();
    assert!(
        life <= ttl && life > ttl - Duration::from_secs(10),
        "{life:?}"
    );

    let httpbin = id("spiffe://cluster.local/ns/test2/sa/httpbin");
    let err = agent
        .ca
        .request(httpbin, ttl)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not_on_caller_node"), "{err}");
    assert!(err.contains("node-a"), "{err}");
    assert_eq!(
        server.metric("sockmesh_ca_refusals_total{reason=\"not_on_caller_node\"}"),
        Some(1.0)
    );
    assert_eq!(
        server.metric("sockmesh_ca_certificates_issued_total"),
        Some(2.0)
    );
    let log = server.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("certificate request refused"))
        .unwrap_or_else(|| panic!("no refusal line in:\n{log}"));
    for part in [
        "sockmesh-system/sockmesh-agent (pod agent-a on node-a)",
        "spiffe://cluster.local/ns/test2/sa/httpbin",
        "not_on_caller_node",
    ] {
        assert!(refusal.contains(part), "{part} missing in {refusal}");
    }
    let client_metrics = agent.metrics.encode();
    assert_eq!(
        metric_in(
            &client_metrics,
            "sockmesh_ca_requests_total{result=\"issued\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_in(
            &client_metrics,
            "sockmesh_ca_requests_total{result=\"refused\"}"
        ),
        Some(1.0),
        "a refusal is final, not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_get_only_their_own_identity_and_bad_tokens_nothing() {
    let work = tempfile::tempdir().unwrap();
    let ca_dir = work.path().join("cacerts");
    let ca = plug_in_ca(&ca_dir);
    let api = ca_support::api(work.path(), None, PODS.to_vec());
    let server = CaProcess::start(&ca_dir, &api, work.path(), None, &[]);
    let addr = server.addr.to_string();
    let ttl = Duration::from_secs(600);
    let sleep = id("spiffe://cluster.local/ns/test1/sa/sleep");
    let httpbin = id("spiffe://cluster.local/ns/test1/sa/httpbin");

    let own = api.issue_token(bound("test1", "sleep", "sleep-a", "node-a"));
    let workload = client(work.path(), &addr, &own, &[&ca]);
    workload.ca.request(sleep.clone(), ttl).await.unwrap();
    let err = workload
        .ca
        .request(httpbin.clone(), ttl)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not_a_node_agent"), "{err}");

    let stranger = client(work.path(), &addr, "not-a-token", &[&ca]);
    let err = stranger.ca.request(sleep.clone(), ttl).await.err().unwrap();
    assert!(err.to_string().contains("token_rejected"), "{err}");

    let mut wrong_audience = bound("sockmesh-system", "sockmesh-agent", "agent-a", "node-a");
    wrong_audience.audiences = vec!["https://kubernetes.default.svc".into()];
    let wrong = api.issue_token(wrong_audience);
    let err = client(work.path(), &addr, &wrong, &[&ca])
        .ca
        .request(sleep, ttl)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("token_rejected"), "{err}");
    assert_eq!(
        server.metric("sockmesh_ca_refusals_total{reason=\"token_rejected\"}"),
        Some(2.0)
    );
}

/// Plug-in CA directories for a rotation: `old`, `new`, and `both` (old signing key, both roots in
/// root-cert.pem), `new-both` (new signing key, both roots).
fn rotation_dirs(work: &Path) -> (MeshCa, [std::path::PathBuf; 4]) {
    let old_dir = work.join("old");
    let new_dir = work.join("new");
    let old = plug_in_ca(&old_dir);
    let new = plug_in_ca(&new_dir);
    let roots = format!(
        "{}{}",
        std::fs::read_to_string(old_dir.join("root-cert.pem")).unwrap(),
        std::fs::read_to_string(new_dir.join("root-cert.pem")).unwrap()
    );
    let mut both = Vec::new();
    for (name, signer) in [("both", &old_dir), ("new-both", &new_dir)] {
        let dir = work.join(name);
        std::fs::create_dir(&dir).unwrap();
        for file in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem"] {
            std::fs::copy(signer.join(file), dir.join(file)).unwrap();
        }
        std::fs::write(dir.join("root-cert.pem"), &roots).unwrap();
        both.push(dir);
    }
    let [both_dir, new_both_dir] = both.try_into().unwrap();
    drop(new);
    (old, [old_dir, both_dir, new_both_dir, new_dir])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_bundle_follows_the_roots_the_ca_returns() {
    let work = tempfile::tempdir().unwrap();
    let (old, dirs) = rotation_dirs(work.path());
    let api = ca_support::api(work.path(), None, PODS.to_vec());
    let token = api.issue_token(bound(
        "sockmesh-system",
        "sockmesh-agent",
        "agent-a",
        "node-a",
    ));
    let port = ca_support::free_port();
    let addr = format!("127.0.0.1:{port}");
    // `--ca-root` names the old root only: the CA's certificate of the new root is trusted
    // through the bundle the "both" answers brought.
    let agent = client(work.path(), &addr, &token, &[&old]);
    let sleep = id("spiffe://cluster.local/ns/test1/sa/sleep");
    let mut seen = Vec::new();
    for dir in &dirs {
        let server = CaProcess::start_on(port, dir, &api, work.path(), None, &[]);
        let cert = agent
            .ca
            .request(sleep.clone(), Duration::from_secs(600))
            .await
            .unwrap();
        seen.push((
            agent.bundle.current().roots().len(),
            cert.info.issuer.clone(),
        ));
        drop(server);
    }
    let sizes: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(sizes, [1, 2, 2, 1], "old → both → both → new");
    assert_eq!(seen[0].1, seen[1].1, "old key signs until the switch");
    assert_eq!(seen[2].1, seen[3].1);
}

async fn wait_for_serial_change(certs: &CertManager, old: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let serial = certs.cert_infos()[0].serial.clone();
        if serial != old {
            return serial;
        }
        assert!(Instant::now() < deadline, "no renewal within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_kept_through_a_ca_outage_and_renewed_after() {
    let work = tempfile::tempdir().unwrap();
    let ca_dir = work.path().join("cacerts");
    let ca = plug_in_ca(&ca_dir);
    let api = ca_support::api(work.path(), None, PODS.to_vec());
    let port = ca_support::free_port();
    let server = CaProcess::start_on(port, &ca_dir, &api, work.path(), None, &[]);
    let token = api.issue_token(bound(
        "sockmesh-system",
        "sockmesh-agent",
        "agent-a",
        "node-a",
    ));
    let agent = client(work.path(), &server.addr.to_string(), &token, &[&ca]);
    let trust = MeshTrust::new(
        agent.bundle.clone(),
        TrustDomains::new("cluster.local", &[]).unwrap(),
    );
    let certs = CertManager::new(Arc::new(agent.ca.clone()), trust, Duration::from_secs(6));
    let sleep = id("spiffe://cluster.local/ns/test1/sa/sleep");
    let identity = certs.acquire(&sleep).unwrap();
    let first = identity.current().info().serial.clone();
    let second = wait_for_serial_change(&certs, &first, Duration::from_secs(6)).await;

    drop(server);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        certs.cert_infos()[0].serial,
        second,
        "the held certificate is served while the CA is down"
    );
    let unavailable = metric_in(
        &agent.metrics.encode(),
        "sockmesh_ca_requests_total{result=\"unavailable\"}",
    );
    assert!(unavailable.unwrap_or(0.0) >= 3.0, "{unavailable:?}");

    let _server = CaProcess::start_on(port, &ca_dir, &api, work.path(), None, &[]);
    wait_for_serial_change(&certs, &second, Duration::from_secs(10)).await;
}
