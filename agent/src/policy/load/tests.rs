use std::path::Path;

use super::*;

#[test]
fn unknown_kinds_skipped_unknown_fields_warned() {
    let report = load_str(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: pa, namespace: a, resourceVersion: "1"}
spec:
  mtls: {mode: STRICT}
  portLevelMTLS: {80: {mode: DISABLE}}
status: {}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: a, managedFields: []}
spec: {restartPolicy: Always, containers: [{name: c, image: x}]}
"#,
    );
    assert!(!report.has_errors(), "{:#?}", report.diagnostics);
    assert_eq!(report.resources.peer_authentications.len(), 1);
    assert_eq!(report.resources.pods.len(), 1);
    let warnings: Vec<_> = report
        .diagnostics
        .iter()
        .map(|d| (d.code, d.location.field.clone()))
        .collect();
    assert_eq!(
        warnings,
        vec![(Code::UnknownField, Some("spec.portLevelMTLS".to_owned()))]
    );
    let text = report.diagnostics[0].to_string();
    assert!(text.contains("PeerAuthentication a/pa"), "{text}");
}

#[test]
fn parse_error_names_document_resource_and_field() {
    let report = load_str(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: a}\nspec:\n  host: x\n  trafficPolicy:\n    tls: {mode: SOMETIMES}\n",
    );
    let err = report.errors().next().expect("an error");
    assert_eq!(err.code, Code::ParseError);
    assert_eq!(err.location.document, Some(1));
    assert_eq!(err.location.resource.as_ref().unwrap().name, "d");
    assert_eq!(
        err.location.field.as_deref(),
        Some("spec.trafficPolicy.tls.mode")
    );
}

#[test]
fn lists_versions_and_duplicates() {
    let report = load_str(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n---\napiVersion: security.istio.io/v2\nkind: PeerAuthentication\nmetadata: {name: x}\n",
    );
    let codes: Vec<_> = report.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, vec![Code::DuplicateResource, Code::InvalidValue]);
    assert_eq!(report.resources.namespaces.len(), 2);
}

#[test]
fn directory_is_read_recursively_in_order() {
    let dir = std::env::temp_dir().join(format!("sockmesh-load-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub/.hidden")).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sub/a.yml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    std::fs::write(dir.join("sub/notes.txt"), "not yaml").unwrap();
    std::fs::write(
        dir.join("sub/.hidden/c.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    let report = load_path(&dir);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    let names: Vec<_> = report
        .resources
        .namespaces
        .iter()
        .map(|n| n.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(load_path(Path::new("/nonexistent/sockmesh")).has_errors());
}

#[test]
fn authorization_policy_loads_with_paths_in_findings() {
    let dir = std::env::temp_dir().join(format!("sockmesh-load-authz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("authz.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: ok, namespace: a, annotations: {istio.io/dry-run: "true"}}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/b/sa/c], principalz: [x]}}]
    to: [{operation: {ports: [8080, "9090"], methods: [GET]}}]
    when: [{key: source.ip, values: [10.0.0.0/8]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: a}
spec: {action: MAYBE}
"#,
    )
    .unwrap();
    let report = load_path(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let policies = &report.resources.authorization_policies;
    assert_eq!(policies.len(), 1);
    let rule = policies[0].spec.rules[0].as_ref().unwrap();
    let op = rule.to[0].operation.as_ref().unwrap();
    assert_eq!(op.ports, ["8080", "9090"]);
    let warning = report
        .diagnostics
        .iter()
        .find(|d| d.code == Code::UnknownField)
        .expect("unknown field warning");
    assert!(
        warning
            .location
            .field
            .as_deref()
            .is_some_and(|f| f == "spec.rules.0.from.0.source.principalz"),
        "{warning}"
    );
    let err = report.errors().next().expect("parse error");
    let text = err.to_string();
    assert_eq!(err.location.field.as_deref(), Some("spec.action"), "{text}");
    assert_eq!(err.location.document, Some(1));
    for part in ["AuthorizationPolicy a/bad", "authz.yaml"] {
        assert!(text.contains(part), "{text}");
    }
}
