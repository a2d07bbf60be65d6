use super::*;

/// Pods: (namespace, name, service account, node).
struct FakePods(Vec<(&'static str, &'static str, &'static str, &'static str)>);

impl PodDirectory for FakePods {
    async fn node_of(&self, namespace: &str, pod: &str) -> Result<Option<String>, String> {
        Ok(self
            .0
            .iter()
            .find(|p| p.0 == namespace && p.1 == pod)
            .map(|p| p.3.to_string()))
    }

    async fn runs_on(&self, namespace: &str, sa: &str, node: &str) -> Result<bool, String> {
        Ok(self
            .0
            .iter()
            .any(|p| p.0 == namespace && p.2 == sa && p.3 == node))
    }
}

fn authorizer() -> NodeAuthorizer<FakePods> {
    NodeAuthorizer::new(
        "cluster.local".into(),
        vec![("sockmesh".into(), "sockmesh".into())],
        FakePods(vec![
            ("test1", "sleep-a", "sleep", "node-a"),
            ("test2", "httpbin-b", "httpbin", "node-b"),
            ("sockmesh", "agent-a", "sockmesh", "node-a"),
        ]),
    )
}

fn caller(ns: &str, sa: &str, pod: Option<&str>, node: Option<&str>) -> Caller {
    Caller {
        namespace: ns.into(),
        service_account: sa.into(),
        pod: pod.map(Into::into),
        node: node.map(Into::into),
    }
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

async fn reason(c: &Caller, requested: &str) -> Option<&'static str> {
    authorizer()
        .authorize(c, &id(requested))
        .await
        .err()
        .map(|r| r.reason)
}

#[tokio::test]
async fn own_identity_always() {
    let plain = caller("test1", "sleep", None, None);
    assert_eq!(
        reason(&plain, "spiffe://cluster.local/ns/test1/sa/sleep").await,
        None
    );
    assert_eq!(
        reason(&plain, "spiffe://other.td/ns/test1/sa/sleep").await,
        Some("foreign_trust_domain")
    );
}

#[tokio::test]
async fn node_agent_gets_only_identities_of_pods_on_its_node() {
    let agent = caller("sockmesh", "sockmesh", Some("agent-a"), Some("node-a"));
    assert_eq!(
        reason(&agent, "spiffe://cluster.local/ns/test1/sa/sleep").await,
        None
    );
    assert_eq!(
        reason(&agent, "spiffe://cluster.local/ns/test2/sa/httpbin").await,
        Some("not_on_caller_node")
    );
    // Node from the caller's pod when the token does not carry it.
    let by_pod = caller("sockmesh", "sockmesh", Some("agent-a"), None);
    assert_eq!(
        reason(&by_pod, "spiffe://cluster.local/ns/test1/sa/sleep").await,
        None
    );
    let unbound = caller("sockmesh", "sockmesh", None, None);
    assert_eq!(
        reason(&unbound, "spiffe://cluster.local/ns/test1/sa/sleep").await,
        Some("caller_node_unknown")
    );
}

#[tokio::test]
async fn other_callers_cannot_impersonate() {
    let sleep = caller("test1", "sleep", Some("sleep-a"), Some("node-a"));
    assert_eq!(
        reason(&sleep, "spiffe://cluster.local/ns/test2/sa/httpbin").await,
        Some("not_a_node_agent")
    );
}
