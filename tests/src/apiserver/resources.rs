//! The resource kinds the API server serves and its discovery documents, which is how clients
//! (kube-rs `Discovery`) learn that a group such as `security.istio.io` exists.
use serde_json::{Value, json};

/// One resource collection: `/api/v1/pods`, `/apis/security.istio.io/v1/peerauthentications`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) namespaced: bool,
}

impl Resource {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn r(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        namespaced,
    }
}

/// Built into every cluster.
pub(crate) const BUILTIN: &[Resource] = &[
    r("", "v1", "Pod", "pods", true),
    r("", "v1", "Namespace", "namespaces", false),
    r("", "v1", "Service", "services", true),
    r("", "v1", "ConfigMap", "configmaps", true),
    r("", "v1", "Secret", "secrets", true),
    r("", "v1", "ServiceAccount", "serviceaccounts", true),
    r("", "v1", "Node", "nodes", false),
    r("apps", "v1", "DaemonSet", "daemonsets", true),
    r("apps", "v1", "Deployment", "deployments", true),
    r(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    r(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        false,
    ),
];

/// Served once Istio's CRDs are installed ([`super::ApiServer::install_istio_crds`]), in every
/// version Istio's CRDs serve (the schemas are the same, so objects are stored once per kind and
/// read in any version); the first version of a group is the preferred one.
#[rustfmt::skip]
pub(crate) const ISTIO: &[Resource] = &[
    r("security.istio.io", "v1", "PeerAuthentication", "peerauthentications", true),
    r("security.istio.io", "v1", "AuthorizationPolicy", "authorizationpolicies", true),
    r("security.istio.io", "v1", "RequestAuthentication", "requestauthentications", true),
    r("security.istio.io", "v1beta1", "PeerAuthentication", "peerauthentications", true),
    r("security.istio.io", "v1beta1", "AuthorizationPolicy", "authorizationpolicies", true),
    r("security.istio.io", "v1beta1", "RequestAuthentication", "requestauthentications", true),
    r("networking.istio.io", "v1", "DestinationRule", "destinationrules", true),
    r("networking.istio.io", "v1", "ServiceEntry", "serviceentries", true),
    r("networking.istio.io", "v1", "VirtualService", "virtualservices", true),
    r("networking.istio.io", "v1", "Gateway", "gateways", true),
    r("networking.istio.io", "v1beta1", "DestinationRule", "destinationrules", true),
    r("networking.istio.io", "v1beta1", "ServiceEntry", "serviceentries", true),
    r("networking.istio.io", "v1beta1", "VirtualService", "virtualservices", true),
    r("networking.istio.io", "v1beta1", "Gateway", "gateways", true),
    r("networking.istio.io", "v1alpha3", "DestinationRule", "destinationrules", true),
    r("networking.istio.io", "v1alpha3", "ServiceEntry", "serviceentries", true),
    r("networking.istio.io", "v1alpha3", "VirtualService", "virtualservices", true),
    r("networking.istio.io", "v1alpha3", "Gateway", "gateways", true),
];

/// Istio's pre-1.6 authentication CRDs, still present in clusters upgraded from then
/// ([`super::ApiServer::install_legacy_istio_crds`]).
pub(crate) const LEGACY_ISTIO: &[Resource] = &[
    r(
        "authentication.istio.io",
        "v1alpha1",
        "MeshPolicy",
        "meshpolicies",
        false,
    ),
    r(
        "authentication.istio.io",
        "v1alpha1",
        "Policy",
        "policies",
        true,
    ),
];

/// `/api`: the core group's versions.
pub(crate) fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

/// `/apis`: every named group served, with its versions.
pub(crate) fn group_list(served: &[Resource]) -> Value {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for res in served.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == res.group) {
            Some((_, versions)) if !versions.contains(&res.version) => versions.push(res.version),
            Some(_) => {}
            None => groups.push((res.group, vec![res.version])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let gvs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                .collect();
            json!({"name": name, "versions": gvs, "preferredVersion": gvs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1` or `/apis/<group>/<version>`; `None` when the group version is not served.
pub(crate) fn resource_list(served: &[Resource], group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = served
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let verbs: &[&str] = if r.kind == "TokenReview" {
                &["create"]
            } else {
                &[
                    "create", "delete", "get", "list", "patch", "update", "watch",
                ]
            };
            json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                   "kind": r.kind, "verbs": verbs})
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
