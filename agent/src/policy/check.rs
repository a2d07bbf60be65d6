//! `sockmesh check` (misconfiguration findings with stable codes) and `sockmesh tls-check` (the old
//! `istioctl authn tls-check` table for one client pod).
//!
//! Traffic findings are computed from one representative mesh client per namespace (client TLS
//! depends only on the client's namespace and labels) towards every Service port. A pod outside the
//! mesh declares what it calls with the annotation `sockmesh.io/calls: "HOST:PORT,..."`; that is how
//! the configuration "shows such a caller" for [`Code::StrictWithNonMeshCaller`].
//! AuthorizationPolicy findings (SM12xx) come from [`super::authz_check`].

use std::collections::BTreeMap;

use super::decision::{ClientBasis, Decider};
use super::diagnostic::{Code, Diagnostic, Severity};
use super::explain::split_target;
use super::model::{InboundMode, PodKey, ResourceRef, TlsMode};
use super::snapshot::Snapshot;

/// Annotation listing the HOST:PORT targets a pod calls.
pub const CALLS_ANNOTATION: &str = "sockmesh.io/calls";

/// All findings for a snapshot, sorted and de-duplicated.
pub fn check(snap: &Snapshot) -> Vec<Diagnostic> {
    let mut out = snap.diagnostics.clone();
    resource_checks(snap, &mut out);
    traffic_checks(snap, &mut out);
    non_mesh_callers(snap, &mut out);
    super::authz_check::findings(snap, &mut out);
    out.sort();
    out.dedup();
    out
}

fn warn(out: &mut Vec<Diagnostic>, code: Code, resource: ResourceRef, msg: String) {
    out.push(Diagnostic::about(Severity::Warning, code, resource, msg));
}

fn resource_checks(snap: &Snapshot, out: &mut Vec<Diagnostic>) {
    let r = &snap.resources;
    let root = &snap.settings.root_namespace;
    let mut first_at_level: BTreeMap<(String, bool), (&str, ResourceRef)> = BTreeMap::new();
    let mut pas: Vec<_> = r.peer_authentications.iter().collect();
    pas.sort_by(|a, b| a.metadata.age_key().cmp(&b.metadata.age_key()));
    for pa in pas {
        let ns = pa.metadata.namespace();
        let me = ResourceRef::new("PeerAuthentication", Some(ns), &pa.metadata.name);
        if !pa.spec.port_level_mtls.is_empty() && !pa.spec.has_selector() {
            warn(
                out,
                Code::PortLevelMtlsWithoutSelector,
                me.clone(),
                "portLevelMtls is ignored without a selector".into(),
            );
        }
        if ns == root && pa.spec.has_selector() {
            warn(
                out,
                Code::RootNamespaceSelector,
                me.clone(),
                "a selector in the root namespace is ignored".into(),
            );
        }
        if !pa.spec.has_selector() {
            let level = if ns == root { "mesh" } else { "namespace" };
            match first_at_level.get(&(ns.to_owned(), true)) {
                Some((_, winner)) => warn(
                    out,
                    Code::ShadowedPolicy,
                    me,
                    format!("several {level}-wide policies; only the oldest, {winner}, applies"),
                ),
                None => {
                    first_at_level.insert((ns.to_owned(), true), (level, me));
                }
            }
        }
    }
    for m in r
        .mesh_policies
        .iter()
        .filter(|m| m.metadata.name != "default")
    {
        let me = ResourceRef::new("MeshPolicy", None, &m.metadata.name);
        warn(
            out,
            Code::MeshPolicyNotDefault,
            me,
            "only the MeshPolicy named default is honoured".into(),
        );
    }
    for p in r
        .policies
        .iter()
        .filter(|p| p.spec.targets.is_empty() && p.metadata.name != "default")
    {
        let me = ResourceRef::new("Policy", Some(p.metadata.namespace()), &p.metadata.name);
        warn(
            out,
            Code::LegacyPolicyNotDefault,
            me,
            "a namespace-wide Policy is honoured only when named default".into(),
        );
    }
    for (i, dr) in r.destination_rules.iter().enumerate() {
        let me = ResourceRef::new(
            "DestinationRule",
            Some(dr.metadata.namespace()),
            &dr.metadata.name,
        );
        let host = snap.dest_rules.host_of(i);
        let known = |h: &str| super::destination_rule::host_matches(host, h);
        let matches = r.services.iter().any(|s| known(&snap.service_fqdn(s)))
            || r.service_entries
                .iter()
                .flat_map(|e| &e.spec.hosts)
                .any(|h| known(h) || h == host);
        if !matches {
            warn(
                out,
                Code::HostMatchesNoService,
                me.clone(),
                format!("host {host} matches no service or service entry"),
            );
        }
        let Some(tp) = &dr.spec.traffic_policy else {
            continue;
        };
        let tls = tp.tls.iter().map(|t| (t, None)).chain(
            tp.port_level_settings
                .iter()
                .filter_map(|p| Some((p.tls.as_ref()?, p.port.as_ref().map(|s| s.number)))),
        );
        for (t, port) in tls {
            let fields = t.certificate_fields();
            if t.mode == TlsMode::IstioMutual && !fields.is_empty() {
                let at = port.map_or_else(String::new, |p| format!(" (port {p})"));
                warn(
                    out,
                    Code::IstioMutualWithCertificates,
                    me.clone(),
                    format!("ISTIO_MUTUAL ignores {}{at}", fields.join(", ")),
                );
            }
        }
    }
}

fn decider_ref(d: &Option<Decider>) -> Option<ResourceRef> {
    d.as_ref().map(|d| d.resource.clone())
}

fn traffic_checks(snap: &Snapshot, out: &mut Vec<Diagnostic>) {
    let r = &snap.resources;
    let mut clients: BTreeMap<&str, PodKey> = BTreeMap::new();
    for pod in &r.pods {
        let key = PodKey::new(pod.namespace(), pod.name());
        if snap.in_mesh(&key) {
            clients.entry(pod.namespace()).or_insert(key);
        }
    }
    for client in clients.values() {
        for svc in &r.services {
            let fqdn = snap.service_fqdn(svc);
            for sp in &svc.spec.ports {
                let Ok(outbound) = snap.outbound_to_host(Some(client), &fqdn, sp.port) else {
                    continue;
                };
                for ep in &outbound.endpoints {
                    let Some(rule) = decider_ref(&ep.client.decided_by) else {
                        continue;
                    };
                    let target = format!(
                        "{fqdn}:{} (endpoint {})",
                        sp.port,
                        ep.pod.as_ref().map_or_else(String::new, PodKey::to_string)
                    );
                    match ep.client.mode {
                        TlsMode::IstioMutual if !ep.in_mesh => warn(
                            out,
                            Code::IstioMutualToNonMesh,
                            rule,
                            format!("ISTIO_MUTUAL towards {target}, which is outside the mesh"),
                        ),
                        TlsMode::Disable
                            if ep.client.basis == ClientBasis::DestinationRule
                                && ep.server.mode == InboundMode::Strict =>
                        {
                            warn(
                                out,
                                Code::DisableToStrict,
                                rule,
                                format!("DISABLE towards {target}, which is STRICT"),
                            )
                        }
                        TlsMode::Simple | TlsMode::Mutual if outbound.app_tls => warn(
                            out,
                            Code::DoubleTls,
                            rule,
                            format!(
                                "{} origination on {target}, where the application already speaks TLS",
                                ep.client.mode.as_str()
                            ),
                        ),
                        _ => {}
                    }
                }
            }
        }
    }
}

fn non_mesh_callers(snap: &Snapshot, out: &mut Vec<Diagnostic>) {
    for pod in &snap.resources.pods {
        let key = PodKey::new(pod.namespace(), pod.name());
        let Some(calls) = pod.annotations().get(CALLS_ANNOTATION) else {
            continue;
        };
        if snap.in_mesh(&key) {
            continue;
        }
        for target in calls.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Ok((host, port)) = split_target(target) else {
                continue;
            };
            let Ok(outbound) = snap.outbound_to_host(Some(&key), &host, port) else {
                continue;
            };
            for ep in outbound
                .endpoints
                .iter()
                .filter(|e| e.server.mode == InboundMode::Strict)
            {
                let Some(pa) = decider_ref(&ep.server.decided_by) else {
                    continue;
                };
                let server = ep.pod.as_ref().map_or_else(String::new, PodKey::to_string);
                warn(
                    out,
                    Code::StrictWithNonMeshCaller,
                    pa,
                    format!("{server} is STRICT but {key}, outside the mesh, calls {target}"),
                );
            }
        }
    }
}

/// One `tls-check` line per reachable Service / ServiceEntry port.
pub fn tls_check(
    snap: &Snapshot,
    client: &PodKey,
) -> Result<Vec<String>, super::resolver::QueryError> {
    let r = &snap.resources;
    let mut targets: Vec<(String, u16)> = Vec::new();
    for svc in &r.services {
        targets.extend(
            svc.spec
                .ports
                .iter()
                .map(|p| (snap.service_fqdn(svc), p.port)),
        );
    }
    for se in &r.service_entries {
        for h in se.spec.hosts.iter().filter(|h| !h.starts_with('*')) {
            targets.extend(se.spec.ports.iter().map(|p| (h.clone(), p.number)));
        }
    }
    let mut lines = vec![format!(
        "{:<55} {:<13} {:<11} {:<9} {}",
        "HOST:PORT", "CLIENT", "SERVER", "STATUS", "DECIDED BY"
    )];
    for (host, port) in targets {
        let out = snap.outbound_to_host(Some(client), &host, port)?;
        let pick = |f: &dyn Fn(&super::decision::Endpoint) -> String| {
            let mut v: Vec<String> = out.endpoints.iter().map(f).collect();
            v.dedup();
            match v.len() {
                0 => "-".to_owned(),
                1 => v.remove(0),
                _ => "mixed".to_owned(),
            }
        };
        let client_mode = pick(&|e| e.client.mode.as_str().to_owned());
        let server_mode = pick(&|e| e.server.mode.as_str().to_owned());
        let status = if out.endpoints.is_empty() {
            "NO ENDPOINTS"
        } else if out.endpoints.iter().all(|e| e.outcome.connects) {
            "OK"
        } else {
            "CONFLICT"
        };
        let by = pick(&|e| {
            let c = e.client.decided_by.as_ref().map_or_else(
                || format!("{:?}", e.client.basis),
                |d| d.resource.to_string(),
            );
            let s = e
                .server
                .decided_by
                .as_ref()
                .map_or_else(|| "-".to_owned(), |d| d.resource.to_string());
            format!("{c} / {s}")
        });
        lines.push(format!(
            "{:<55} {:<13} {:<11} {:<9} {by}",
            format!("{host}:{port}"),
            client_mode,
            server_mode,
            status
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::resolver::tests::{SEEDS, snapshot};

    fn codes(yaml: &str) -> Vec<(&'static str, String)> {
        check(&snapshot(yaml))
            .into_iter()
            .map(|d| (d.code.as_str(), d.location.resource.unwrap().name))
            .collect()
    }

    #[test]
    fn seed_findings() {
        let found = codes(SEEDS);
        // DISABLE on productpage:9090 towards a STRICT (legacy Policy) workload.
        assert!(
            found.contains(&("SM1003", "productpage-2".into())),
            "{found:?}"
        );
        assert!(!found.iter().any(|(c, _)| *c == "SM1001"), "{found:?}");
    }

    #[test]
    fn resource_findings() {
        let yaml = format!(
            "{SEEDS}\n---\n{}",
            r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ports, namespace: test2, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {portLevelMtls: {80: {mode: DISABLE}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: late, namespace: test2, creationTimestamp: "2024-02-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: sel, namespace: istio-system}
spec: {selector: {matchLabels: {app: x}}, mtls: {mode: STRICT}}
---
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: mesh}
spec: {}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: ns, namespace: test2}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: certs, namespace: test1}
spec: {host: nothing-here, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, caCertificates: /ca.pem}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: to-test3, namespace: test1}
spec: {host: httpbin.test3.svc.cluster.local, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: v1
kind: Pod
metadata: {name: caller, namespace: test3, annotations: {sockmesh.io/calls: "httpbin.test2:8000"}}
"#
        );
        let found = codes(&yaml);
        for want in [
            ("SM1001", "to-test3"),
            ("SM1002", "default"),
            ("SM1004", "ports"),
            ("SM1005", "sel"),
            ("SM1006", "mesh"),
            ("SM1007", "certs"),
            ("SM1008", "certs"),
            ("SM1009", "late"),
            ("SM1011", "ns"),
        ] {
            assert!(
                found.contains(&(want.0, want.1.to_owned())),
                "{want:?} not in {found:?}"
            );
        }
    }

    #[test]
    fn authorization_findings() {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec: {containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: a}
spec: {selector: {matchLabels: {app: web}}, action: CUSTOM, provider: {name: x}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: http, namespace: a}
spec: {selector: {matchLabels: {app: web}}, rules: [{to: [{operation: {methods: [GET]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: foreign, namespace: a}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: [elsewhere.example/ns/a/sa/web]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ghost, namespace: a}
spec: {selector: {matchLabels: {app: ghost}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: colour, namespace: a}
spec: {action: DENY, rules: [{when: [{key: source.colour, values: [red]}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: a}
spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-from-db, namespace: a}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/default]}}], to: [{operation: {ports: ["9999"]}}]}]
"#;
        let findings = check(&snapshot(yaml));
        let found: Vec<_> = findings
            .iter()
            .map(|d| (d.code.as_str(), d.location.resource.clone().unwrap().name))
            .collect();
        for want in [
            ("SM1201", "ext"),
            ("SM1202", "http"),
            ("SM1203", "web"),
            ("SM1203", "db"),
            ("SM1204", "foreign"),
            ("SM1205", "ghost"),
            ("SM1206", "colour"),
            ("SM1207", "gw"),
        ] {
            assert!(
                found.contains(&(want.0, want.1.to_owned())),
                "{want:?} not in {found:?}"
            );
        }
        let http = findings
            .iter()
            .find(|d| d.code.as_str() == "SM1202")
            .unwrap();
        assert_eq!(http.location.field.as_deref(), Some("spec.rules[0]"));
        assert!(
            http.message.contains("operation.methods"),
            "{}",
            http.message
        );
        assert!(!found.contains(&("SM1205", "gw".to_owned())), "{found:?}");
    }

    #[test]
    fn tls_check_table() {
        let snap = snapshot(SEEDS);
        let lines = tls_check(&snap, &"test1/sleep".parse().unwrap()).unwrap();
        let line = |h: &str| lines.iter().find(|l| l.starts_with(h)).unwrap().clone();
        assert!(
            line("httpbin.test2.svc.cluster.local:8000").contains("ISTIO_MUTUAL  STRICT      OK")
        );
        assert!(line("productpage.bookinfo.svc.cluster.local:9090").contains("CONFLICT"));
    }
}
