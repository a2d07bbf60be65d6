//! The policy steps of the seed article and what each connection must do under them.

use super::probe::OnWire;
use super::{CLIENTS, HTTPBIN_PORT, Service, service};

/// What a connection must do: the bytes the client side puts on the wire, whether the echo comes
/// back, and the refusal reason the agents log when it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub wire: OnWire,
    pub ok: bool,
    /// Access-log `reason` of the refusal.
    pub reason: Option<&'static str>,
}

/// Mesh mTLS, echo answered.
pub const MTLS: Expect = Expect {
    wire: OnWire::Mtls,
    ok: true,
    reason: None,
};
/// Plaintext, echo answered.
pub const PLAIN: Expect = Expect {
    wire: OnWire::Plain,
    ok: true,
    reason: None,
};
/// Plaintext refused by a server that requires mTLS.
pub const STRICT_REFUSES: Expect = Expect {
    wire: OnWire::Plain,
    ok: false,
    reason: Some("plaintext_rejected"),
};
/// ISTIO_MUTUAL towards a server without a proxy: the handshake cannot complete.
pub const HANDSHAKE_FAILS: Expect = Expect {
    wire: OnWire::Mtls,
    ok: false,
    reason: Some("upstream_handshake"),
};

/// One connection of a step: `client` (`namespace/pod`) to `service` on `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub client: &'static str,
    pub service: Service,
    pub port: u16,
    pub expect: Expect,
}

/// A policy configuration and the connectivity it must produce.
#[derive(Debug, Clone)]
pub struct Step {
    /// Short id (test names, `--step`).
    pub name: &'static str,
    /// One line: what the step shows.
    pub title: &'static str,
    /// Policy YAML for the config directory (empty: no policy).
    pub policy: String,
    pub cells: Vec<Cell>,
}

/// The three clients (rows) against the three httpbins (columns) on port 8000.
fn httpbin_grid(rows: [[Expect; 3]; 3]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (client, row) in CLIENTS.into_iter().zip(rows) {
        for (ns, expect) in ["test1", "test2", "test3"].into_iter().zip(row) {
            cells.push(Cell {
                client,
                service: service(&format!("httpbin.{ns}")),
                port: HTTPBIN_PORT,
                expect,
            });
        }
    }
    cells
}

/// PeerAuthentication STRICT for the whole of namespace test1.
pub const STRICT_TEST1: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: test1}
spec:
  mtls: {mode: STRICT}
"#;

/// The article's mesh-wide policy: MeshPolicy `default` plus a `*.local` ISTIO_MUTUAL rule in the
/// root namespace.
const MESH_WIDE: &str = r#"
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec:
  peers:
  - mtls: {}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec:
  host: "*.local"
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
"#;

const DISABLE_TEST3: &str = r#"
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: httpbin, namespace: test3}
spec:
  host: httpbin.test3.svc.cluster.local
  trafficPolicy:
    tls: {mode: DISABLE}
"#;

const LEGACY_PERMISSIVE_TEST1: &str = r#"
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: httpbin, namespace: test1}
spec:
  targets:
  - name: httpbin
  peers:
  - mtls:
      mode: PERMISSIVE
"#;

const WORKLOAD_PERMISSIVE: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: test1}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: test2}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: httpbin, namespace: test2}
spec:
  selector:
    matchLabels: {app: httpbin}
  mtls: {mode: PERMISSIVE}
"#;

const PRODUCTPAGE: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: productpage-2, namespace: bookinfo}
spec:
  host: productpage.bookinfo.svc.cluster.local
  trafficPolicy:
    tls:
      mode: DISABLE
    portLevelSettings:
    - port:
        number: 9080
      tls:
        mode: ISTIO_MUTUAL
"#;

/// The steps in the article's order; each step's policy replaces the previous one.
pub fn steps() -> Vec<Step> {
    let productpage = service("productpage.bookinfo");
    let page = |client: &'static str, port: u16, expect: Expect| Cell {
        client,
        service: productpage,
        port,
        expect,
    };
    vec![
        Step {
            name: "defaults",
            title: "no policy: auto mTLS inside the mesh, plaintext to test3, PERMISSIVE accepts test3's plaintext",
            policy: String::new(),
            cells: httpbin_grid([
                [MTLS, MTLS, PLAIN],
                [MTLS, MTLS, PLAIN],
                [PLAIN, PLAIN, PLAIN],
            ]),
        },
        Step {
            name: "strict-test1",
            title: "PeerAuthentication STRICT in test1 refuses test3's plaintext client",
            policy: STRICT_TEST1.to_owned(),
            cells: httpbin_grid([
                [MTLS, MTLS, PLAIN],
                [MTLS, MTLS, PLAIN],
                [STRICT_REFUSES, PLAIN, PLAIN],
            ]),
        },
        Step {
            name: "mesh-wide",
            title: "MeshPolicy default + DestinationRule *.local ISTIO_MUTUAL: mTLS forced towards test3 fails, test3's client is refused",
            policy: MESH_WIDE.to_owned(),
            cells: httpbin_grid([
                [MTLS, MTLS, HANDSHAKE_FAILS],
                [MTLS, MTLS, HANDSHAKE_FAILS],
                [STRICT_REFUSES, STRICT_REFUSES, PLAIN],
            ]),
        },
        Step {
            name: "disable-test3",
            title: "+ DestinationRule httpbin.test3 tls DISABLE: the mesh reaches test3 in plaintext again",
            policy: [MESH_WIDE, DISABLE_TEST3].concat(),
            cells: httpbin_grid([
                [MTLS, MTLS, PLAIN],
                [MTLS, MTLS, PLAIN],
                [STRICT_REFUSES, STRICT_REFUSES, PLAIN],
            ]),
        },
        Step {
            name: "legacy-permissive",
            title: "+ Policy httpbin (targets) PERMISSIVE in test1: test3's client reaches test1's httpbin only",
            policy: [MESH_WIDE, DISABLE_TEST3, LEGACY_PERMISSIVE_TEST1].concat(),
            cells: httpbin_grid([
                [MTLS, MTLS, PLAIN],
                [MTLS, MTLS, PLAIN],
                [PLAIN, STRICT_REFUSES, PLAIN],
            ]),
        },
        Step {
            name: "workload-permissive",
            title: "PeerAuthentication STRICT in test1 and test2, PERMISSIVE for app=httpbin in test2 (workload selector)",
            policy: WORKLOAD_PERMISSIVE.to_owned(),
            cells: httpbin_grid([
                [MTLS, MTLS, PLAIN],
                [MTLS, MTLS, PLAIN],
                [STRICT_REFUSES, PLAIN, PLAIN],
            ]),
        },
        Step {
            name: "productpage",
            title: "DestinationRule productpage DISABLE, ISTIO_MUTUAL on port 9080 only",
            policy: PRODUCTPAGE.to_owned(),
            cells: vec![
                page("test1/sleep", 9080, MTLS),
                page("test1/sleep", 9090, PLAIN),
                page("test2/sleep", 9080, MTLS),
                page("test2/sleep", 9090, PLAIN),
                page("test3/sleep", 9080, PLAIN),
                page("test3/sleep", 9090, PLAIN),
            ],
        },
    ]
}
