use std::collections::BTreeMap;

use super::*;
use crate::policy::load::load_str;

fn dr(name: &str, ns: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec: {spec}\n"
    )
}

/// Which rule gives TLS to a client in `client_ns` for `host:port` (service in `svc_ns`).
fn pick(
    yaml: &str,
    client_ns: &str,
    host: &str,
    svc_ns: &str,
    port: u16,
) -> Option<(String, TlsModeName)> {
    let report = load_str(yaml);
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    let rules = &report.resources.destination_rules;
    let index = DestinationRuleIndex::build(rules, "cluster.local");
    let merged = index.lookup(
        client_ns,
        &BTreeMap::new(),
        host,
        Some(svc_ns),
        "istio-system",
    )?;
    let t = rule_tls(rules, merged, port)?;
    Some((t.rule.metadata.name.clone(), t.tls.mode.as_str()))
}

type TlsModeName = &'static str;

/// (what, yaml, client namespace, port, expected (rule, mode)).
type Case = (
    &'static str,
    String,
    &'static str,
    u16,
    Option<(&'static str, &'static str)>,
);

#[test]
fn host_expansion_and_matching() {
    assert_eq!(
        expand_host("web", "a", "cluster.local"),
        "web.a.svc.cluster.local"
    );
    assert_eq!(expand_host("web.a", "b", "cluster.local"), "web.a");
    assert_eq!(expand_host("*.local", "b", "cluster.local"), "*.local");
    assert!(host_matches("*", "x"));
    assert!(host_matches("*.local", "web.a.svc.cluster.local"));
    assert!(!host_matches("*.local", "local"));
    assert!(!host_matches("web", "web2"));
}

#[test]
fn table() {
    const T1: &str = "2024-01-01T00:00:00Z";
    const T2: &str = "2024-02-01T00:00:00Z";
    let host = "web.b.svc.cluster.local";
    let short = dr(
        "short",
        "b",
        T1,
        "{host: web, trafficPolicy: {tls: {mode: SIMPLE}}}",
    );
    let wild_long = dr(
        "wl",
        "b",
        T1,
        "{host: '*.svc.cluster.local', trafficPolicy: {tls: {mode: MUTUAL}}}",
    );
    let wild_short = dr(
        "ws",
        "b",
        T1,
        "{host: '*.local', trafficPolicy: {tls: {mode: DISABLE}}}",
    );
    let root = dr(
        "root",
        "istio-system",
        T1,
        "{host: '*', trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}",
    );
    let client_local = dr(
        "mine",
        "a",
        T1,
        "{host: web.b.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}",
    );
    let private = dr(
        "priv",
        "b",
        T1,
        "{host: web, exportTo: ['.'], trafficPolicy: {tls: {mode: SIMPLE}}}",
    );
    let to_c = dr(
        "toc",
        "b",
        T1,
        "{host: web, exportTo: [c], trafficPolicy: {tls: {mode: SIMPLE}}}",
    );
    let old_no_policy = dr("old", "b", T1, "{host: web, subsets: [{name: v1}]}");
    let mid = dr(
        "mid",
        "b",
        T2,
        "{host: web, trafficPolicy: {tls: {mode: MUTUAL}}}",
    );
    let ports = dr(
        "ports",
        "b",
        T1,
        "{host: web, trafficPolicy: {tls: {mode: DISABLE}, portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE}}, {port: {number: 8443}}]}}",
    );
    let cases: Vec<Case> = vec![
        (
            "short host expanded in its namespace",
            short.clone(),
            "a",
            80,
            Some(("short", "SIMPLE")),
        ),
        (
            "exact beats wildcard",
            format!("{wild_long}{short}"),
            "a",
            80,
            Some(("short", "SIMPLE")),
        ),
        (
            "longer wildcard wins",
            format!("{wild_short}{wild_long}"),
            "a",
            80,
            Some(("wl", "MUTUAL")),
        ),
        (
            "client namespace first",
            format!("{short}{client_local}"),
            "a",
            80,
            Some(("mine", "DISABLE")),
        ),
        (
            "root namespace last",
            root.clone(),
            "a",
            80,
            Some(("root", "ISTIO_MUTUAL")),
        ),
        (
            "service namespace before root",
            format!("{root}{short}"),
            "a",
            80,
            Some(("short", "SIMPLE")),
        ),
        (
            "private not exported, root applies",
            format!("{root}{private}"),
            "a",
            80,
            Some(("root", "ISTIO_MUTUAL")),
        ),
        (
            "private visible in own namespace",
            private.clone(),
            "b",
            80,
            Some(("priv", "SIMPLE")),
        ),
        ("exportTo other namespace", to_c.clone(), "a", 80, None),
        (
            "exportTo listed namespace",
            to_c,
            "c",
            80,
            Some(("toc", "SIMPLE")),
        ),
        (
            "merge takes oldest policy",
            format!("{mid}{old_no_policy}"),
            "a",
            80,
            Some(("mid", "MUTUAL")),
        ),
        (
            "port level replaces tls",
            ports.clone(),
            "a",
            443,
            Some(("ports", "SIMPLE")),
        ),
        (
            "port entry without tls keeps top level",
            ports.clone(),
            "a",
            8443,
            Some(("ports", "DISABLE")),
        ),
        (
            "other port uses top level",
            ports,
            "a",
            80,
            Some(("ports", "DISABLE")),
        ),
    ];
    for (what, yaml, client, port, want) in cases {
        let got = pick(&yaml, client, host, "b", port);
        assert_eq!(got, want.map(|(n, m)| (n.to_owned(), m)), "{what}");
    }
}

#[test]
fn workload_selector_rule_applies_to_matching_clients_only() {
    let yaml = format!(
        "{}{}",
        dr(
            "all",
            "a",
            "2024-01-01T00:00:00Z",
            "{host: web.b.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}"
        ),
        dr(
            "sel",
            "a",
            "2024-01-01T00:00:00Z",
            "{host: web.b.svc.cluster.local, workloadSelector: {matchLabels: {app: x}}, trafficPolicy: {tls: {mode: SIMPLE}}}"
        )
    );
    let report = load_str(&yaml);
    let rules = &report.resources.destination_rules;
    let index = DestinationRuleIndex::build(rules, "cluster.local");
    let labels = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
    let name = |l: &BTreeMap<String, String>| {
        let m = index
            .lookup("a", l, "web.b.svc.cluster.local", Some("b"), "istio-system")
            .unwrap();
        rules[m.policy_from.unwrap()].metadata.name.clone()
    };
    assert_eq!(name(&labels), "sel");
    assert_eq!(name(&BTreeMap::new()), "all");
}
