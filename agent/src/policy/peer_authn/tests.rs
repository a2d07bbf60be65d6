use crate::policy::load::load_str;
use crate::policy::model::{InboundMode, PodKey};
use crate::policy::resolver::tests::snapshot;

/// Builds namespace `app` (in the mesh) with pod `p` labelled `app: web`, plus `policies`.
fn inbound(policies: &str, port: u16) -> (InboundMode, Option<String>) {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: app, labels: {{istio-injection: enabled}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: istio-system, labels: {{istio-injection: enabled}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: app, labels: {{app: web}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: istio-system, labels: {{app: web}}}}
{policies}"#
    );
    assert!(!load_str(&yaml).has_errors());
    let snap = snapshot(&yaml);
    let i = snap.inbound(&PodKey::new("app", "p"), port).unwrap();
    let by = i.decided_by.map(|d| match d.port {
        Some(p) => format!("{}:{p}", d.resource.name),
        None => d.resource.name,
    });
    (i.mode, by)
}

fn pa(name: &str, ns: &str, created: &str, body: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec: {body}\n"
    )
}

#[test]
fn table() {
    use InboundMode::*;
    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-02-01T00:00:00Z";
    let mesh_strict = pa("mesh", "istio-system", T1, "{mtls: {mode: STRICT}}");
    let ns_unset = pa("ns", "app", T1, "{mtls: {mode: UNSET}}");
    let ns_disable = pa("ns", "app", T1, "{mtls: {mode: DISABLE}}");
    let wl_unset_ports = pa(
        "wl",
        "app",
        T1,
        "{selector: {matchLabels: {app: web}}, portLevelMtls: {8080: {mode: DISABLE}, 9090: {mode: UNSET}}}",
    );
    let wl_other = pa(
        "wl",
        "app",
        T1,
        "{selector: {matchLabels: {app: db}}, mtls: {mode: DISABLE}}",
    );
    let ns_ports = pa(
        "ns",
        "app",
        T1,
        "{mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: DISABLE}}}",
    );
    let root_selector = pa(
        "rootsel",
        "istio-system",
        T1,
        "{selector: {matchLabels: {app: web}}, mtls: {mode: DISABLE}}",
    );
    let older = pa("b-old", "app", T1, "{mtls: {mode: DISABLE}}");
    let newer = pa("a-new", "app", T2, "{mtls: {mode: STRICT}}");
    let tie_b = pa("b", "app", T1, "{mtls: {mode: DISABLE}}");
    let tie_a = pa("a", "app", T1, "{mtls: {mode: STRICT}}");
    let empty_selector = pa("es", "app", T1, "{selector: {}, mtls: {mode: STRICT}}");

    let cases: Vec<(&str, String, u16, InboundMode, Option<&str>)> = vec![
        ("nothing configured", String::new(), 80, Permissive, None),
        ("mesh-wide", mesh_strict.clone(), 80, Strict, Some("mesh")),
        (
            "namespace UNSET inherits",
            format!("{mesh_strict}{ns_unset}"),
            80,
            Strict,
            Some("mesh"),
        ),
        (
            "namespace beats mesh",
            format!("{mesh_strict}{ns_disable}"),
            80,
            Disable,
            Some("ns"),
        ),
        (
            "port-level DISABLE",
            format!("{mesh_strict}{wl_unset_ports}"),
            8080,
            Disable,
            Some("wl:8080"),
        ),
        (
            "port-level UNSET inherits",
            format!("{mesh_strict}{wl_unset_ports}"),
            9090,
            Strict,
            Some("mesh"),
        ),
        (
            "other port uses workload",
            format!("{mesh_strict}{wl_unset_ports}"),
            80,
            Strict,
            Some("mesh"),
        ),
        (
            "non-matching selector",
            format!("{mesh_strict}{wl_other}"),
            80,
            Strict,
            Some("mesh"),
        ),
        (
            "portLevelMtls without selector ignored",
            ns_ports,
            8080,
            Strict,
            Some("ns"),
        ),
        (
            "root selector ignored",
            format!("{mesh_strict}{root_selector}"),
            80,
            Strict,
            Some("mesh"),
        ),
        (
            "oldest wins",
            format!("{newer}{older}"),
            80,
            Disable,
            Some("b-old"),
        ),
        (
            "tie by name",
            format!("{tie_b}{tie_a}"),
            80,
            Strict,
            Some("a"),
        ),
        (
            "empty selector is namespace-wide",
            empty_selector,
            80,
            Strict,
            Some("es"),
        ),
    ];
    for (what, policies, port, mode, by) in cases {
        assert_eq!(
            inbound(&policies, port),
            (mode, by.map(str::to_owned)),
            "{what}"
        );
    }
}

#[test]
fn legacy_table() {
    use InboundMode::*;
    let svc = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: app}\nspec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc, port: 90}]}\n";
    let mesh = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {peers: [{mtls: {}}]}\n";
    let mesh_other = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata: {name: other}\nspec: {peers: [{mtls: {}}]}\n";
    let ns_plain = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: default, namespace: app}\nspec: {}\n";
    let ns_misnamed = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: ns, namespace: app}\nspec: {}\n";
    let svc_port = "---\napiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata: {name: web, namespace: app}\nspec: {targets: [{name: web, ports: [{name: http}]}], peers: [{mtls: {mode: PERMISSIVE}}]}\n";
    let pa_ns = pa(
        "pa",
        "app",
        "2024-01-01T00:00:00Z",
        "{mtls: {mode: STRICT}}",
    );
    let cases: Vec<(&str, String, u16, InboundMode, Option<&str>)> = vec![
        (
            "mesh policy default",
            format!("{svc}{mesh}"),
            8080,
            Strict,
            Some("default"),
        ),
        (
            "mesh policy other name ignored",
            format!("{svc}{mesh_other}"),
            8080,
            Permissive,
            None,
        ),
        (
            "namespace without mtls is plaintext",
            format!("{svc}{mesh}{ns_plain}"),
            8080,
            Disable,
            Some("default"),
        ),
        (
            "namespace policy must be named default",
            format!("{svc}{mesh}{ns_misnamed}"),
            8080,
            Strict,
            Some("default"),
        ),
        (
            "service port by name",
            format!("{svc}{mesh}{svc_port}"),
            8080,
            Permissive,
            Some("web"),
        ),
        (
            "other service port falls back",
            format!("{svc}{mesh}{svc_port}"),
            90,
            Strict,
            Some("default"),
        ),
        (
            "PeerAuthentication wins a tie",
            format!("{svc}{ns_plain}{pa_ns}"),
            8080,
            Strict,
            Some("pa"),
        ),
        (
            "service legacy beats namespace PA",
            format!("{svc}{pa_ns}{svc_port}"),
            8080,
            Permissive,
            Some("web"),
        ),
    ];
    for (what, policies, port, mode, by) in cases {
        assert_eq!(
            inbound(&policies, port),
            (mode, by.map(str::to_owned)),
            "{what}"
        );
    }
}
