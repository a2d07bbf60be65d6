use std::net::SocketAddr;

use crate::policy::decision::ClientBasis;
use crate::policy::load::load_str;
use crate::policy::model::{InboundMode, PodKey, TlsMode};
use crate::policy::{settings::MeshSettings, snapshot::Snapshot};

pub(crate) const SEEDS: &str = include_str!("../../../tests/fixtures/policy/seeds.yaml");

pub(crate) fn snapshot(yaml: &str) -> Snapshot {
    let report = load_str(yaml);
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    Snapshot::from_report(report, MeshSettings::default()).unwrap()
}

fn key(s: &str) -> PodKey {
    s.parse().unwrap()
}

/// (from, to host, port, client mode, server mode, connects, client-side deciding rule).
type Case = (
    Option<&'static str>,
    &'static str,
    u16,
    TlsMode,
    InboundMode,
    bool,
    Option<&'static str>,
);

#[test]
fn seed_article_scenarios() {
    let snap = snapshot(SEEDS);
    use InboundMode::*;
    use TlsMode::*;
    // (from, to host, port, client mode, server mode, connects, client decider name)
    let cases: &[Case] = &[
        (
            Some("test1/sleep"),
            "httpbin.test2",
            8000,
            IstioMutual,
            Strict,
            true,
            Some("default"),
        ),
        (
            Some("test1/sleep"),
            "httpbin.test3",
            8000,
            TlsMode::Disable,
            InboundMode::Disable,
            true,
            Some("httpbin"),
        ),
        (
            Some("test1/sleep"),
            "httpbin",
            8000,
            IstioMutual,
            Permissive,
            true,
            Some("default"),
        ),
        (
            Some("test3/sleep"),
            "httpbin.test1",
            8000,
            TlsMode::Disable,
            Permissive,
            true,
            None,
        ),
        (
            Some("test3/sleep"),
            "httpbin.test2",
            8000,
            TlsMode::Disable,
            Strict,
            false,
            None,
        ),
        (
            None,
            "httpbin.test2.svc.cluster.local",
            8000,
            TlsMode::Disable,
            Strict,
            false,
            None,
        ),
        (
            Some("test1/sleep"),
            "productpage.bookinfo",
            9080,
            IstioMutual,
            Strict,
            true,
            Some("productpage-2"),
        ),
        (
            Some("test1/sleep"),
            "productpage.bookinfo",
            9090,
            TlsMode::Disable,
            Strict,
            false,
            Some("productpage-2"),
        ),
    ];
    for (from, host, port, client, server, connects, decider) in cases {
        let from = from.map(key);
        let out = snap.outbound_to_host(from.as_ref(), host, *port).unwrap();
        let ep = &out.endpoints[0];
        let ctx = format!("{from:?} -> {host}:{port}: {ep:#?}");
        assert_eq!(ep.client.mode, *client, "{ctx}");
        assert_eq!(ep.server.mode, *server, "{ctx}");
        assert_eq!(ep.outcome.connects, *connects, "{ctx}");
        assert_eq!(
            ep.client
                .decided_by
                .as_ref()
                .map(|d| d.resource.name.as_str()),
            *decider,
            "{ctx}"
        );
    }
}

#[test]
fn port_level_rule_and_sni() {
    let snap = snapshot(SEEDS);
    let out = snap
        .outbound_to_host(Some(&key("test1/sleep")), "productpage.bookinfo", 9080)
        .unwrap();
    let ep = &out.endpoints[0];
    assert_eq!(ep.client.decided_by.as_ref().unwrap().port, Some(9080));
    assert_eq!(
        ep.client.sni.as_deref(),
        Some("outbound_.9080_._.productpage.bookinfo.svc.cluster.local")
    );
    assert_eq!(
        ep.client.subject_alt_names,
        vec!["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"]
    );
    let out = snap
        .outbound_to_host(Some(&key("test1/sleep")), "httpbin.test2", 8000)
        .unwrap();
    assert_eq!(
        out.endpoints[0].client.sni.as_deref(),
        Some("outbound_.8000_._.httpbin.test2.svc.cluster.local")
    );
}

#[test]
fn by_address_matches_by_name() {
    let snap = snapshot(SEEDS);
    let from = key("test1/sleep");
    let by_vip = snap.outbound(Some(&from), "10.96.1.1:8000".parse().unwrap());
    let by_name = snap
        .outbound_to_host(Some(&from), "httpbin.test1.svc.cluster.local", 8000)
        .unwrap();
    assert_eq!(by_vip, by_name);
    // Named targetPort resolves through the container port.
    assert_eq!(
        by_vip.endpoints[0].addr,
        Some("10.1.0.2:80".parse::<SocketAddr>().unwrap())
    );
    // Pod IP resolves to the pod and uses its service's rule.
    let direct = snap.outbound(Some(&from), "10.2.0.2:80".parse().unwrap());
    assert_eq!(direct.endpoints[0].client.mode, TlsMode::IstioMutual);
    assert_eq!(
        direct.endpoints[0].client.sni.as_deref(),
        Some("outbound_.8000_._.httpbin.test2.svc.cluster.local")
    );
    // Unknown address: external passthrough, but the root `*.local` rule does not match an IP.
    let ext = snap.outbound(Some(&from), "203.0.113.9:443".parse().unwrap());
    assert_eq!(ext.endpoints[0].client.mode, TlsMode::Disable);
    assert_eq!(ext.endpoints[0].client.basis, ClientBasis::Plaintext);
    assert!(ext.endpoints[0].outcome.connects);
}

const AUTO: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {sockmesh.io/capture: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {sockmesh.io/capture: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {app: client}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: strict, namespace: b, labels: {app: web, v: strict}}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: b, labels: {app: web, v: plain, sockmesh.io/capture: disabled}}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: b}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{name: https, port: 443, targetPort: 8443}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: b}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: strict, namespace: b}
spec:
  selector: {matchLabels: {v: strict}}
  mtls: {mode: STRICT}
"#;

#[test]
fn auto_mtls_per_endpoint_fixes_istio_namespace_inference() {
    let snap = snapshot(AUTO);
    let out = snap.outbound(Some(&key("a/client")), "10.96.0.10:443".parse().unwrap());
    assert!(out.app_tls);
    let by_pod: Vec<_> = out
        .endpoints
        .iter()
        .map(|e| (e.pod.as_ref().unwrap().name.as_str(), e))
        .collect();
    assert_eq!(by_pod.len(), 2);
    let (name, plain) = by_pod[0];
    assert_eq!(name, "plain");
    assert!(!plain.in_mesh);
    assert_eq!(
        (plain.client.mode, plain.server.mode),
        (TlsMode::Disable, InboundMode::Disable)
    );
    assert!(plain.outcome.connects);
    let (name, strict) = by_pod[1];
    assert_eq!(name, "strict");
    // Istio would send plaintext here (namespace says DISABLE) and fail; we send mTLS.
    assert_eq!(strict.client.mode, TlsMode::IstioMutual);
    assert_eq!(strict.client.basis, ClientBasis::AutoMtls);
    assert_eq!(strict.server.mode, InboundMode::Strict);
    assert!(strict.outcome.connects);

    let off = Snapshot::from_report(
        load_str(AUTO),
        MeshSettings {
            auto_mtls: false,
            ..MeshSettings::default()
        },
    )
    .unwrap();
    let out = off.outbound(Some(&key("a/client")), "10.96.0.10:443".parse().unwrap());
    assert!(!out.endpoints[1].outcome.connects);
}

#[test]
fn double_tls_and_simple_to_strict() {
    let yaml = format!(
        "{AUTO}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: a}}\nspec:\n  host: web.b.svc.cluster.local\n  trafficPolicy: {{tls: {{mode: SIMPLE}}}}\n"
    );
    let snap = snapshot(&yaml);
    let out = snap.outbound(Some(&key("a/client")), "10.96.0.10:443".parse().unwrap());
    for ep in &out.endpoints {
        assert_eq!(ep.client.mode, TlsMode::Simple);
        assert!(!ep.outcome.connects, "{ep:#?}");
    }
    assert!(
        out.endpoints[0]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("double TLS")
    );
    assert!(
        out.endpoints[1]
            .outcome
            .reason
            .as_deref()
            .unwrap()
            .contains("STRICT")
    );
    assert_eq!(
        out.endpoints[0].client.sni.as_deref(),
        Some("web.b.svc.cluster.local")
    );
}

#[test]
fn inbound_and_node_lookup() {
    let snap = snapshot(SEEDS);
    let inbound = snap.inbound(&key("test1/httpbin"), 80).unwrap();
    assert_eq!(inbound.mode, InboundMode::Permissive);
    assert_eq!(inbound.decided_by.unwrap().resource.kind, "Policy");
    let inbound = snap.inbound(&key("test2/httpbin"), 80).unwrap();
    assert_eq!(inbound.decided_by.unwrap().resource.kind, "MeshPolicy");
    assert_eq!(
        snap.inbound(&key("test3/httpbin"), 80).unwrap().mode,
        InboundMode::Disable
    );
    assert!(snap.inbound(&key("test3/nope"), 80).is_none());
    let on_a: Vec<_> = snap
        .pods_on_node("node-a")
        .map(|p| p.name().to_owned())
        .collect();
    assert_eq!(on_a, vec!["httpbin", "sleep"]);
    assert_eq!(snap.all_pods_on_node("node-a").count(), 3);
}

#[test]
fn decisions_do_not_depend_on_document_order() {
    let docs: Vec<&str> = SEEDS.split("\n---\n").collect();
    let reversed: Vec<&str> = docs.iter().rev().copied().collect();
    let a = snapshot(SEEDS);
    let b = snapshot(&reversed.join("\n---\n"));
    let from = key("test1/sleep");
    for (host, port) in [
        ("httpbin.test2", 8000),
        ("httpbin.test3", 8000),
        ("productpage.bookinfo", 9080),
    ] {
        assert_eq!(
            a.outbound_to_host(Some(&from), host, port).unwrap(),
            b.outbound_to_host(Some(&from), host, port).unwrap()
        );
    }
}

#[test]
fn bad_queries() {
    let snap = snapshot(SEEDS);
    assert!(
        snap.outbound_to_host(Some(&key("test1/nope")), "httpbin", 8000)
            .is_err()
    );
    assert!(snap.outbound_to_host(None, "httpbin", 8000).is_err());
    assert!(
        snap.outbound_to_host(Some(&key("test1/sleep")), "httpbin", 9999)
            .is_err()
    );
}
