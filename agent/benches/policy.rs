//! Policy resolver at cluster scale: 10,000 pods, 2,000 services, 2,000 policies (1,000
//! PeerAuthentications, 1,000 DestinationRules) in 100 namespaces. Measures one outbound plus one
//! inbound decision, and a full reload (parse YAML + build indexes). The authorization case adds
//! 2,000 AuthorizationPolicies (20 per namespace) and measures one inbound authorization.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use sockmesh_agent::policy::load::load_str;
use sockmesh_agent::policy::{AuthzAction, AuthzRequest, MeshSettings, PodKey, Snapshot};

const NAMESPACES: usize = 100;
const PODS_PER_NS: usize = 100;
const SERVICES_PER_NS: usize = 20;
const POLICIES_PER_NS: usize = 10;

fn cluster_yaml() -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: STRICT}}}}\n---"
    );
    for n in 0..NAMESPACES {
        let ns = format!("ns{n}");
        let _ = writeln!(
            y,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{istio-injection: enabled}}}}\n---"
        );
        for p in 0..PODS_PER_NS {
            let svc = p % SERVICES_PER_NS;
            let _ = writeln!(
                y,
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod{p}, namespace: {ns}, labels: {{app: svc{svc}, pod: p{p}}}}}\nspec: {{serviceAccountName: sa{svc}, nodeName: node{}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: 10.{n}.{}.{}}}\n---",
                p % 10,
                p / 250,
                p % 250 + 1
            );
        }
        for s in 0..SERVICES_PER_NS {
            let _ = writeln!(
                y,
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc{s}, namespace: {ns}}}\nspec: {{clusterIP: 172.20.{n}.{}, selector: {{app: svc{s}}}, ports: [{{name: http, port: 80, targetPort: http}}, {{name: https, port: 443, targetPort: 8443}}]}}\n---",
                s + 1
            );
        }
        for k in 0..POLICIES_PER_NS {
            let _ = writeln!(
                y,
                "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: pa{k}, namespace: {ns}}}\nspec: {{selector: {{matchLabels: {{app: svc{k}}}}}, mtls: {{mode: PERMISSIVE}}, portLevelMtls: {{8443: {{mode: DISABLE}}}}}}\n---"
            );
            let _ = writeln!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr{k}, namespace: {ns}}}\nspec: {{host: svc{k}, trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}, portLevelSettings: [{{port: {{number: 443}}, tls: {{mode: DISABLE}}}}]}}}}\n---"
            );
        }
    }
    y
}

/// Per namespace: one namespace-wide DENY, 18 ALLOW policies for `svc1..svc18` (a principal, an
/// IP block, a port and a condition in rule 0, a namespace prefix in rule 1), one dry-run DENY.
fn authz_yaml() -> String {
    let mut y = String::new();
    for n in 0..NAMESPACES {
        let ns = format!("ns{n}");
        let head = |name: &str, meta: &str| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}{meta}}}\nspec:"
            )
        };
        let _ = writeln!(
            y,
            "{} {{action: DENY, rules: [{{from: [{{source: {{namespaces: [\"blocked*\"]}}}}]}}]}}\n---",
            head("deny-blocked", "")
        );
        for k in 1..19 {
            let _ = writeln!(
                y,
                "{} {{selector: {{matchLabels: {{app: svc{k}}}}}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/ns{}/sa/sa{k}]}}}}, {{source: {{ipBlocks: [10.{n}.0.0/16]}}}}], to: [{{operation: {{ports: [\"8080\"]}}}}], when: [{{key: source.namespace, notValues: [ns99]}}]}}, {{from: [{{source: {{namespaces: [\"ns4*\"]}}}}]}}]}}\n---",
                head(&format!("allow-svc{k}"), ""),
                (n + 1) % NAMESPACES
            );
        }
        let _ = writeln!(
            y,
            "{} {{action: DENY, rules: [{{to: [{{operation: {{notPorts: [\"8080\"]}}}}]}}]}}\n---",
            head("dry-deny", ", annotations: {istio.io/dry-run: \"true\"}")
        );
    }
    y
}

fn build(yaml: &str) -> Snapshot {
    Snapshot::from_report(load_str(yaml), MeshSettings::default()).expect("valid benchmark config")
}

fn bench(c: &mut Criterion) {
    let yaml = cluster_yaml();
    let snap = build(&yaml);
    assert_eq!(snap.resources.pods.len(), NAMESPACES * PODS_PER_NS);
    let client = PodKey::new("ns42", "pod7");
    let server = PodKey::new("ns77", "pod3");
    let dst: SocketAddr = "172.20.77.4:80".parse().unwrap();
    c.bench_function("outbound+inbound decision", |b| {
        b.iter(|| {
            let out = snap.outbound(Some(black_box(&client)), black_box(dst));
            let inb = snap.inbound(black_box(&server), black_box(8080));
            black_box((out, inb))
        })
    });
    let with_authz = build(&format!("{yaml}{}", authz_yaml()));
    assert_eq!(with_authz.resources.authorization_policies.len(), 2_000);
    let req = AuthzRequest {
        principal: Some("spiffe://cluster.local/ns/ns42/sa/sa7"),
        source_ip: "10.42.0.8".parse::<IpAddr>().unwrap(),
        destination_ip: "10.77.0.4".parse::<IpAddr>().unwrap(),
        destination_port: 8080,
        sni: None,
    };
    let d = with_authz.authorize(&server, &req);
    assert_eq!((d.action, d.rule), (AuthzAction::Allow, Some(1)), "{d:?}");
    assert!(d.dry_run.is_some());
    c.bench_function("inbound authorization decision", |b| {
        b.iter(|| black_box(with_authz.authorize(black_box(&server), black_box(&req))))
    });
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    group.bench_function("full reload from YAML", |b| {
        b.iter(|| black_box(build(black_box(&yaml))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
