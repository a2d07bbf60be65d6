//! Which identities a caller may obtain, as istiod's node authorizer decides it: its own, always;
//! a workload's (named by `ImpersonatedIdentity`) only if the caller is a trusted node agent and a
//! pod with that namespace and service account is scheduled on the caller's own node, checked
//! against the Kubernetes API at request time. The caller's node comes from its bound token
//! (`authentication.kubernetes.io/node-name`) or else from its pod's `spec.nodeName`; a caller
//! whose node cannot be told gets nothing but its own identity. Every doubt refuses.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::authenticate::Caller;
use super::refusal::Refusal;
use crate::spiffe::SpiffeId;

/// What the authorizer asks the cluster.
pub trait PodDirectory: Send + Sync + 'static {
    /// The node a pod is scheduled on (`None`: no such pod, or not scheduled).
    fn node_of(
        &self,
        namespace: &str,
        pod: &str,
    ) -> impl Future<Output = Result<Option<String>, String>> + Send;
    /// Whether a live pod running as `namespace/service_account` is scheduled on `node`.
    fn runs_on(
        &self,
        namespace: &str,
        service_account: &str,
        node: &str,
    ) -> impl Future<Output = Result<bool, String>> + Send;
}

/// The node authorizer.
pub struct NodeAuthorizer<P> {
    trust_domain: String,
    /// `namespace/service-account` of the node agents allowed to impersonate.
    node_agents: Vec<(String, String)>,
    pods: P,
}

impl<P: PodDirectory> NodeAuthorizer<P> {
    pub fn new(trust_domain: String, node_agents: Vec<(String, String)>, pods: P) -> Self {
        NodeAuthorizer {
            trust_domain,
            node_agents,
            pods,
        }
    }

    /// The caller's own SPIFFE id.
    pub fn own_identity(&self, caller: &Caller) -> Result<SpiffeId, Refusal> {
        SpiffeId::new(
            &self.trust_domain,
            &caller.namespace,
            &caller.service_account,
        )
        .map_err(|e| Refusal::invalid("bad_identity", format!("caller {caller}: {e}")))
    }

    pub async fn authorize(&self, caller: &Caller, requested: &SpiffeId) -> Result<(), Refusal> {
        if requested.trust_domain() != self.trust_domain {
            return Err(Refusal::denied(
                "foreign_trust_domain",
                format!("this CA signs only trust domain {}", self.trust_domain),
            ));
        }
        if requested.namespace() == caller.namespace
            && requested.service_account() == caller.service_account
        {
            return Ok(());
        }
        let trusted = self
            .node_agents
            .iter()
            .any(|(ns, sa)| *ns == caller.namespace && *sa == caller.service_account);
        if !trusted {
            return Err(Refusal::denied(
                "not_a_node_agent",
                "the caller may obtain only its own identity",
            ));
        }
        let node = self.caller_node(caller).await?;
        let (ns, sa) = (requested.namespace(), requested.service_account());
        match self.pods.runs_on(ns, sa, &node).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refusal::denied(
                "not_on_caller_node",
                format!("no pod of {ns}/{sa} is scheduled on the caller's node {node}"),
            )),
            Err(e) => Err(Refusal::unavailable(
                "pod_lookup_failed",
                format!("listing pods of {ns} on {node}: {e}"),
            )),
        }
    }

    async fn caller_node(&self, caller: &Caller) -> Result<String, Refusal> {
        if let Some(node) = &caller.node {
            return Ok(node.clone());
        }
        let Some(pod) = &caller.pod else {
            return Err(Refusal::denied(
                "caller_node_unknown",
                "the token is not bound to a pod, so the caller's node is unknown",
            ));
        };
        match self.pods.node_of(&caller.namespace, pod).await {
            Ok(Some(node)) => Ok(node),
            Ok(None) => Err(Refusal::denied(
                "caller_node_unknown",
                format!(
                    "the caller's pod {}/{pod} is not scheduled",
                    caller.namespace
                ),
            )),
            Err(e) => Err(Refusal::unavailable(
                "pod_lookup_failed",
                format!("reading the caller's pod {}/{pod}: {e}", caller.namespace),
            )),
        }
    }
}

/// The Kubernetes API as the pod directory (`pods` get and list, nothing else).
#[derive(Clone)]
pub struct KubePods {
    client: kube::Client,
}

impl KubePods {
    pub fn new(client: kube::Client) -> Self {
        KubePods { client }
    }
}

impl PodDirectory for KubePods {
    async fn node_of(&self, namespace: &str, pod: &str) -> Result<Option<String>, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api.get_opt(pod).await.map_err(|e| e.to_string())?;
        Ok(pod.and_then(|p| p.spec).and_then(|s| s.node_name))
    }

    async fn runs_on(
        &self,
        namespace: &str,
        service_account: &str,
        node: &str,
    ) -> Result<bool, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let pods = api.list(&params).await.map_err(|e| e.to_string())?;
        Ok(pods.items.iter().any(|pod| {
            let spec_matches = pod.spec.as_ref().is_some_and(|s| {
                s.node_name.as_deref() == Some(node)
                    && s.service_account_name.as_deref().unwrap_or("default") == service_account
            });
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            spec_matches && !matches!(phase, Some("Succeeded" | "Failed"))
        }))
    }
}

#[cfg(test)]
#[path = "authorize_tests.rs"]
mod tests;
