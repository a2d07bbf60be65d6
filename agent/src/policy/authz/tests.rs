use std::net::IpAddr;

use super::{AuthzAction, AuthzDecision, AuthzRequest};
use crate::policy::load::load_str;
use crate::policy::model::PodKey;
use crate::policy::{settings::MeshSettings, snapshot::Snapshot};

use AuthzAction::{Allow, Deny};

/// Root namespace, `a` (web 10.0.1.1 sa web, db 10.0.1.2 sa db) and `b` (client 10.0.2.1 sa client).
const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {serviceAccountName: web}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec: {serviceAccountName: db}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec: {serviceAccountName: client}
status: {podIP: 10.0.2.1}
"#;

const CLIENT: &str = "spiffe://cluster.local/ns/b/sa/client";
const DB: &str = "spiffe://cluster.local/ns/a/sa/db";

/// `AuthorizationPolicy NS/NAME` with a flow-style `spec`, and optional extra metadata.
fn ap(ns: &str, name: &str, meta: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}{meta}}}\nspec: {spec}\n"
    )
}

fn snap_with(policies: &str, settings: MeshSettings) -> Snapshot {
    let report = load_str(&format!("{PODS}{policies}"));
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    Snapshot::from_report(report, settings).unwrap()
}

fn snap(policies: &str) -> Snapshot {
    snap_with(policies, MeshSettings::default())
}

/// A connection to `to` (pod key) on `port` from `principal` at `src`.
#[derive(Clone, Copy)]
struct Conn {
    to: &'static str,
    principal: Option<&'static str>,
    src: &'static str,
    port: u16,
    sni: Option<&'static str>,
}

const FROM_CLIENT: Conn = Conn {
    to: "a/web",
    principal: Some(CLIENT),
    src: "10.0.2.1",
    port: 8080,
    sni: None,
};

fn decide(s: &Snapshot, c: &Conn) -> AuthzDecision {
    let key: PodKey = c.to.parse().unwrap();
    let dst = s
        .pod(&key)
        .map_or("10.9.9.9".parse().unwrap(), |p| p.ips()[0]);
    s.authorize(
        &key,
        &AuthzRequest {
            principal: c.principal,
            source_ip: c.src.parse::<IpAddr>().unwrap(),
            destination_ip: dst,
            destination_port: c.port,
            sni: c.sni,
        },
    )
}

/// Action, deciding policy and rule.
type Expect = (AuthzAction, Option<&'static str>, Option<usize>);
const ALLOWED: Expect = (Allow, None, None);
const DENIED: Expect = (Deny, None, None);
const ALLOW_P0: Expect = (Allow, Some("a/p"), Some(0));
const DENY_P0: Expect = (Deny, Some("a/p"), Some(0));

/// (policies, connection, expected).
type Case = (String, Conn, Expect);

/// Policy `a/p` with a flow-style spec.
fn pol(spec: &str) -> String {
    ap("a", "p", "", spec)
}

fn run(cases: Vec<Case>) {
    for (i, (policies, conn, (action, policy, rule))) in cases.into_iter().enumerate() {
        let d = decide(&snap(&policies), &conn);
        assert_eq!(d.action, action, "case {i}: {d:?}\n{policies}");
        assert_eq!(d.policy.as_deref(), policy, "case {i}: {d:?}");
        assert_eq!(d.rule, rule, "case {i}: {d:?}");
    }
}

fn from(principal: Option<&'static str>, src: &'static str) -> Conn {
    Conn {
        principal,
        src,
        ..FROM_CLIENT
    }
}

fn port(port: u16) -> Conn {
    Conn {
        port,
        ..FROM_CLIENT
    }
}

#[test]
fn precedence_and_empty_forms() {
    let allow_all = ap("a", "allow-all", "", "{rules: [{}]}");
    let deny_all = ap("a", "deny-all", "", "{action: DENY, rules: [{}]}");
    let custom = ap(
        "a",
        "ext",
        "",
        "{action: CUSTOM, provider: {name: x}, rules: [{}]}",
    );
    run(vec![
        (String::new(), FROM_CLIENT, ALLOWED),
        (ap("a", "nothing", "", "{}"), FROM_CLIENT, DENIED),
        (
            allow_all.clone(),
            FROM_CLIENT,
            (Allow, Some("a/allow-all"), Some(0)),
        ),
        (
            format!("{allow_all}{deny_all}"),
            FROM_CLIENT,
            (Deny, Some("a/deny-all"), Some(0)),
        ),
        // A DENY without rules never matches.
        (ap("a", "d", "", "{action: DENY}"), FROM_CLIENT, ALLOWED),
        (
            format!("{deny_all}{custom}"),
            FROM_CLIENT,
            (Deny, Some("a/ext"), Some(0)),
        ),
        // CUSTOM without rules matches nothing, so nothing fails closed.
        (
            ap("a", "ext", "", "{action: CUSTOM, provider: {name: x}}"),
            FROM_CLIENT,
            ALLOWED,
        ),
        // HTTP-only rules of a CUSTOM policy are dropped at L4: it matches everything.
        (
            ap(
                "a",
                "ext",
                "",
                "{action: CUSTOM, provider: {name: x}, rules: [{to: [{operation: {paths: [/admin]}}]}]}",
            ),
            FROM_CLIENT,
            (Deny, Some("a/ext"), Some(0)),
        ),
        // Two ALLOW policies: the first that matches (canonical order) decides.
        (
            format!(
                "{}{}",
                ap("a", "z", "", "{rules: [{}]}"),
                ap(
                    "a",
                    "m",
                    "",
                    "{rules: [{from: [{source: {namespaces: [x]}}]}, {}]}"
                )
            ),
            FROM_CLIENT,
            (Allow, Some("a/m"), Some(1)),
        ),
    ]);
}

#[test]
fn principals_and_namespaces_come_from_the_verified_identity() {
    let allow = |field: &str, v: &str| {
        pol(&format!(
            "{{rules: [{{from: [{{source: {{{field}: [\"{v}\"]}}}}]}}]}}"
        ))
    };
    let deny = |field: &str, v: &str| {
        pol(&format!(
            "{{action: DENY, rules: [{{from: [{{source: {{{field}: [\"{v}\"]}}}}]}}]}}"
        ))
    };
    let plain = from(None, "10.0.2.1");
    let db = from(Some(DB), "10.0.1.2");
    run(vec![
        (
            allow("principals", "cluster.local/ns/b/sa/client"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            allow("principals", "cluster.local/ns/b/sa/client"),
            db,
            DENIED,
        ),
        (
            allow("principals", "cluster.local/ns/b/sa/client"),
            from(None, "10.0.2.1"),
            DENIED,
        ),
        // Written with the URI scheme it never matches: principals have no spiffe:// prefix.
        (allow("principals", CLIENT), FROM_CLIENT, DENIED),
        (
            allow("principals", "cluster.local/ns/b/*"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (allow("principals", "*/sa/client"), FROM_CLIENT, ALLOW_P0),
        (allow("principals", "*/sa/web"), FROM_CLIENT, DENIED),
        (allow("principals", "*"), FROM_CLIENT, ALLOW_P0),
        (allow("principals", "*"), from(None, "10.0.2.1"), DENIED),
        // The classic "require mTLS" DENY: plaintext has no principal, so notPrincipals matches.
        (deny("notPrincipals", "*"), from(None, "10.0.2.1"), DENY_P0),
        (deny("notPrincipals", "*"), FROM_CLIENT, ALLOWED),
        (
            deny("notPrincipals", "cluster.local/ns/a/*"),
            FROM_CLIENT,
            DENY_P0,
        ),
        (allow("namespaces", "b"), FROM_CLIENT, ALLOW_P0),
        (allow("namespaces", "b"), from(None, "10.0.2.1"), DENIED),
        (allow("namespaces", "*"), from(None, "10.0.2.1"), DENIED),
        (allow("namespaces", "*"), FROM_CLIENT, ALLOW_P0),
        (allow("namespaces", "b*"), FROM_CLIENT, ALLOW_P0),
        (allow("namespaces", "a"), FROM_CLIENT, DENIED),
        (deny("notNamespaces", "a"), FROM_CLIENT, DENY_P0),
        (deny("notNamespaces", "a"), db, ALLOWED),
        (deny("notNamespaces", "a"), plain, DENY_P0),
        (allow("serviceAccounts", "b/client"), FROM_CLIENT, ALLOW_P0),
        // A bare name means the policy's namespace (a).
        (allow("serviceAccounts", "client"), FROM_CLIENT, DENIED),
        (
            deny("notServiceAccounts", "db"),
            from(Some(DB), "10.0.1.2"),
            ALLOWED,
        ),
    ]);
}

#[test]
fn ip_blocks_and_ports() {
    let allow = |source: &str| {
        pol(&format!(
            "{{rules: [{{from: [{{source: {{{source}}}}}]}}]}}"
        ))
    };
    let to = |op: &str| pol(&format!("{{rules: [{{to: [{{operation: {{{op}}}}}]}}]}}"));
    run(vec![
        (allow("ipBlocks: [10.0.2.0/24]"), FROM_CLIENT, ALLOW_P0),
        (
            allow("ipBlocks: [10.0.2.0/24]"),
            from(Some(CLIENT), "10.0.3.1"),
            DENIED,
        ),
        (allow("ipBlocks: [10.0.2.1]"), FROM_CLIENT, ALLOW_P0),
        (allow("ipBlocks: [10.0.2.2]"), FROM_CLIENT, DENIED),
        (
            allow("ipBlocks: [10.0.0.0/8], notIpBlocks: [10.0.2.1]"),
            FROM_CLIENT,
            DENIED,
        ),
        (
            allow("remoteIpBlocks: [10.0.2.0/24]"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            allow("notRemoteIpBlocks: [10.0.2.0/24]"),
            FROM_CLIENT,
            DENIED,
        ),
        // Source fields are ANDed; two sources are ORed.
        (
            allow("ipBlocks: [10.0.2.1], namespaces: [a]"),
            FROM_CLIENT,
            DENIED,
        ),
        (
            pol(
                "{rules: [{from: [{source: {namespaces: [a]}}, {source: {ipBlocks: [10.0.2.1]}}]}]}",
            ),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        // An unparsable block drops the ALLOW rule ...
        (
            allow("ipBlocks: [not-an-ip, 10.0.2.1]"),
            FROM_CLIENT,
            DENIED,
        ),
        // ... but is only ignored in a DENY rule, which then matches everything.
        (
            pol("{action: DENY, rules: [{from: [{source: {ipBlocks: [nope]}}]}]}"),
            FROM_CLIENT,
            DENY_P0,
        ),
        (to("ports: [\"8080\"]"), port(8080), ALLOW_P0),
        (to("ports: [\"8080\"]"), port(9090), DENIED),
        (to("ports: [8080, 9090]"), port(9090), ALLOW_P0),
        (to("notPorts: [\"8080\"]"), port(8080), DENIED),
        (to("notPorts: [\"8080\"]"), port(9090), ALLOW_P0),
        (to("ports: [http]"), port(8080), DENIED),
    ]);
}

#[test]
fn http_only_fields_in_allow_and_deny() {
    run(vec![
        // ALLOW: a rule with HTTP-only fields never matches, even with matching L4 fields.
        (
            pol(
                "{rules: [{from: [{source: {principals: [\"*\"]}}], to: [{operation: {methods: [GET]}}]}]}",
            ),
            FROM_CLIENT,
            DENIED,
        ),
        (
            pol(
                "{rules: [{to: [{operation: {methods: [GET]}}]}, {from: [{source: {namespaces: [b]}}]}]}",
            ),
            FROM_CLIENT,
            (Allow, Some("a/p"), Some(1)),
        ),
        (
            pol("{rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]}"),
            FROM_CLIENT,
            DENIED,
        ),
        (
            pol("{rules: [{when: [{key: \"request.headers[x]\", values: [y]}]}]}"),
            FROM_CLIENT,
            DENIED,
        ),
        // DENY: the HTTP-only conditions are dropped and the rest applies.
        (
            pol("{action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}"),
            FROM_CLIENT,
            DENY_P0,
        ),
        (
            pol(
                "{action: DENY, rules: [{from: [{source: {namespaces: [a]}}], to: [{operation: {methods: [POST], ports: [\"8080\"]}}]}]}",
            ),
            FROM_CLIENT,
            ALLOWED,
        ),
        (
            pol(
                "{action: DENY, rules: [{from: [{source: {namespaces: [b]}}], to: [{operation: {notMethods: [GET]}}]}]}",
            ),
            FROM_CLIENT,
            DENY_P0,
        ),
        (
            pol(
                "{action: DENY, rules: [{when: [{key: \"request.auth.claims[iss]\", values: [x]}, {key: source.namespace, values: [a]}]}]}",
            ),
            FROM_CLIENT,
            ALLOWED,
        ),
    ]);
}

#[test]
fn when_conditions() {
    let when = |key: &str, values: &str| {
        pol(&format!(
            "{{rules: [{{when: [{{key: {key}, {values}}}]}}]}}"
        ))
    };
    let sni = Conn {
        sni: Some("outbound_.8080_._.web.a.svc.cluster.local"),
        ..FROM_CLIENT
    };
    run(vec![
        (
            when("source.ip", "values: [10.0.2.0/24]"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            when("source.ip", "notValues: [10.0.2.1]"),
            FROM_CLIENT,
            DENIED,
        ),
        (
            when("remote.ip", "values: [10.0.2.1]"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            when("source.namespace", "values: [b]"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            when("source.namespace", "values: [b]"),
            from(None, "10.0.2.1"),
            DENIED,
        ),
        (
            when("source.principal", "values: [cluster.local/ns/b/sa/client]"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            when("source.principal", "notValues: [\"*\"]"),
            FROM_CLIENT,
            DENIED,
        ),
        (
            when("destination.ip", "values: [10.0.1.1]"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            when("destination.ip", "values: [10.0.1.2]"),
            FROM_CLIENT,
            DENIED,
        ),
        (
            when("destination.port", "values: [\"8080\"]"),
            FROM_CLIENT,
            ALLOW_P0,
        ),
        (
            when("destination.port", "notValues: [\"8080\"]"),
            FROM_CLIENT,
            DENIED,
        ),
        (
            when("connection.sni", "values: [\"outbound_.8080_*\"]"),
            sni,
            ALLOW_P0,
        ),
        (
            when("connection.sni", "values: [\"*\"]"),
            FROM_CLIENT,
            DENIED,
        ),
        // An unknown key makes the rule invalid for every action.
        (when("source.colour", "values: [red]"), FROM_CLIENT, DENIED),
        (
            pol("{action: DENY, rules: [{when: [{key: source.colour, values: [red]}]}]}"),
            FROM_CLIENT,
            ALLOWED,
        ),
        // Every condition must hold.
        (
            pol(
                "{rules: [{when: [{key: source.namespace, values: [b]}, {key: destination.port, values: [\"1\"]}]}]}",
            ),
            FROM_CLIENT,
            DENIED,
        ),
    ]);
}

#[test]
fn selectors_and_the_root_namespace() {
    let nothing = |ns: &str, sel: &str| {
        ap(
            ns,
            "n",
            "",
            &format!("{{selector: {{matchLabels: {{{sel}}}}}}}"),
        )
    };
    let to_client = Conn {
        to: "b/client",
        ..FROM_CLIENT
    };
    let to_db = Conn {
        to: "a/db",
        ..FROM_CLIENT
    };
    run(vec![
        // Root namespace without selector: mesh-wide.
        (ap("istio-system", "n", "", "{}"), to_client, DENIED),
        // Root namespace with a selector: matching workloads in every namespace.
        (nothing("istio-system", "app: web"), FROM_CLIENT, DENIED),
        (nothing("istio-system", "app: web"), to_db, ALLOWED),
        // Elsewhere a selector only selects in its own namespace.
        (nothing("b", "app: web"), FROM_CLIENT, ALLOWED),
        (nothing("a", "app: web"), FROM_CLIENT, DENIED),
        (
            nothing("a", "app: web"),
            Conn {
                to: "a/db",
                ..FROM_CLIENT
            },
            ALLOWED,
        ),
        // An empty matchLabels selects the whole namespace.
        (
            ap("a", "n", "", "{selector: {matchLabels: {}}}"),
            Conn {
                to: "a/db",
                ..FROM_CLIENT
            },
            DENIED,
        ),
        // targetRef policies never attach to workloads.
        (
            ap(
                "a",
                "n",
                "",
                "{targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}}",
            ),
            FROM_CLIENT,
            ALLOWED,
        ),
        // An unknown pod is denied.
        (
            String::new(),
            Conn {
                to: "a/ghost",
                ..FROM_CLIENT
            },
            DENIED,
        ),
    ]);
}

#[test]
fn dry_run_and_audit_never_change_the_decision() {
    let dry = ", annotations: {istio.io/dry-run: \"true\"}";
    let s = snap(&ap(
        "a",
        "d",
        dry,
        "{action: DENY, rules: [{from: [{source: {namespaces: [b]}}]}]}",
    ));
    let d = decide(&s, &FROM_CLIENT);
    assert_eq!((d.action, d.policy.as_deref()), (Allow, None), "{d:?}");
    let would = d.dry_run.expect("dry-run outcome");
    assert_eq!(
        (would.action, would.policy.as_deref(), would.rule),
        (Deny, Some("a/d"), Some(0))
    );
    assert_eq!(would.reason, "denied by dry-run DENY policy a/d rule 0");
    assert_eq!(
        decide(&s, &from(Some(DB), "10.0.1.2"))
            .dry_run
            .unwrap()
            .action,
        Allow
    );

    // A dry-run ALLOW on its own: enforced as if absent; would deny what it does not match.
    let s = snap(&ap(
        "a",
        "d",
        dry,
        "{rules: [{from: [{source: {namespaces: [a]}}]}]}",
    ));
    let d = decide(&s, &FROM_CLIENT);
    assert_eq!(d.action, Allow);
    assert_eq!(d.dry_run.unwrap().action, Deny);
    // With an enforced ALLOW that matches, adding the dry-run ALLOW changes nothing.
    let s = snap(&format!(
        "{}{}",
        ap(
            "a",
            "d",
            dry,
            "{rules: [{from: [{source: {namespaces: [a]}}]}]}"
        ),
        ap("a", "e", "", "{rules: [{}]}")
    ));
    let would = decide(&s, &FROM_CLIENT).dry_run.unwrap();
    assert_eq!(
        (would.action, would.policy.as_deref()),
        (Allow, Some("a/e"))
    );

    // A dry-run CUSTOM does not fail closed; "false" and an unparsable value are enforced.
    let s = snap(&ap(
        "a",
        "c",
        dry,
        "{action: CUSTOM, provider: {name: x}, rules: [{}]}",
    ));
    assert_eq!(decide(&s, &FROM_CLIENT).action, Allow);
    for value in ["false", "yes"] {
        let meta = format!(", annotations: {{istio.io/dry-run: \"{value}\"}}");
        let s = snap(&ap("a", "d", &meta, "{action: DENY, rules: [{}]}"));
        let d = decide(&s, &FROM_CLIENT);
        assert_eq!((d.action, d.dry_run), (Deny, None), "{value}");
    }

    let s = snap(&format!(
        "{}{}",
        ap(
            "a",
            "audit",
            "",
            "{action: AUDIT, rules: [{from: [{source: {namespaces: [b]}}]}]}"
        ),
        ap("a", "allow", "", "{rules: [{}]}")
    ));
    let d = decide(&s, &FROM_CLIENT);
    assert_eq!((d.action, d.audited.as_deref()), (Allow, Some("a/audit")));
    assert_eq!(d.reason, "allowed by ALLOW policy a/allow rule 0");
    assert_eq!(decide(&s, &from(Some(DB), "10.0.1.2")).audited, None);
}

#[test]
fn trust_domain_aliases() {
    let settings = MeshSettings {
        trust_domain: "new.td".into(),
        trust_domain_aliases: vec!["old.td".into()],
        ..MeshSettings::default()
    };
    let allow = |p: &str| {
        pol(&format!(
            "{{rules: [{{from: [{{source: {{principals: [\"{p}\"]}}}}]}}]}}"
        ))
    };
    let peer = |id: &'static str| from(Some(id), "10.0.2.1");
    let cases = [
        (
            "old.td/ns/b/sa/client",
            "spiffe://new.td/ns/b/sa/client",
            Allow,
        ),
        (
            "new.td/ns/b/sa/client",
            "spiffe://old.td/ns/b/sa/client",
            Allow,
        ),
        // cluster.local always names the local trust domain.
        (
            "cluster.local/ns/b/sa/client",
            "spiffe://new.td/ns/b/sa/client",
            Allow,
        ),
        (
            "other.td/ns/b/sa/client",
            "spiffe://new.td/ns/b/sa/client",
            Deny,
        ),
        (
            "other.td/ns/b/sa/client",
            "spiffe://other.td/ns/b/sa/client",
            Allow,
        ),
        (
            "*/ns/b/sa/client",
            "spiffe://other.td/ns/b/sa/client",
            Allow,
        ),
    ];
    for (principal, id, want) in cases {
        let d = decide(&snap_with(&allow(principal), settings.clone()), &peer(id));
        assert_eq!(d.action, want, "{principal} vs {id}: {d:?}");
    }
}

#[test]
fn reasons_name_policy_and_rule() {
    let s = snap(&format!(
        "{}{}",
        ap(
            "a",
            "only-b",
            "",
            "{rules: [{from: [{source: {namespaces: [b]}}]}]}"
        ),
        ap(
            "a",
            "no-db",
            "",
            "{action: DENY, rules: [{}, {from: [{source: {principals: [cluster.local/ns/a/sa/db]}}]}]}"
        ),
    ));
    let d = decide(&s, &from(Some(DB), "10.0.1.2"));
    assert_eq!(d.reason, "denied by DENY policy a/no-db rule 0");
    let s = snap(&format!(
        "{}{}",
        ap(
            "a",
            "one",
            "",
            "{rules: [{from: [{source: {namespaces: [x]}}]}]}"
        ),
        ap("a", "two", "", "{}"),
    ));
    assert_eq!(
        decide(&s, &FROM_CLIENT).reason,
        "denied: 2 ALLOW policies apply and no rule matched"
    );
    assert_eq!(
        decide(&snap(""), &FROM_CLIENT).reason,
        "allowed: no ALLOW policy applies"
    );
}
