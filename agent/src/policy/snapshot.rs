//! An immutable, indexed view of one configuration: the resolver's input.
//!
//! Everything a per-connection decision needs is precomputed or hashed here (pods by IP and key,
//! services by cluster IP and FQDN, entries by address and host, rules by namespace and host, and each
//! pod's composed PeerAuthentication, legacy policy and applicable AuthorizationPolicies), so
//! decisions never scan the policy lists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::authz::{AuthzAction, AuthzDecision, AuthzIndex, AuthzRequest, TrustBundle};
use super::auto_mtls::Credential;
use super::destination_rule::DestinationRuleIndex;
use super::diagnostic::{Code, Diagnostic, Severity};
use super::legacy::{self, LegacyRule};
use super::load::LoadReport;
use super::model::{Pod, PodKey, ResourceRef, Resources, Service};
use super::peer_authn::{PeerAuthnIndex, PeerPolicy};
use super::settings::MeshSettings;

/// One immutable configuration with its indexes. Share it as `Arc<Snapshot>`; all methods take `&self`.
#[derive(Debug)]
pub struct Snapshot {
    pub settings: MeshSettings,
    pub resources: Resources,
    /// Warnings found while loading (errors never make it into a snapshot).
    pub diagnostics: Vec<Diagnostic>,
    pub(super) pod_by_key: HashMap<PodKey, usize>,
    pub(super) pod_by_ip: HashMap<IpAddr, usize>,
    pub(super) pods_by_node: HashMap<String, Vec<usize>>,
    pub(super) pod_in_mesh: Vec<bool>,
    pub(super) pod_peer: Vec<PeerPolicy>,
    pub(super) pod_legacy: Vec<Vec<LegacyRule>>,
    pub(super) pod_services: Vec<Vec<usize>>,
    pub(super) svc_by_ip: HashMap<IpAddr, usize>,
    pub(super) svc_by_host: HashMap<String, usize>,
    pub(super) svc_endpoints: Vec<Vec<usize>>,
    pub(super) se_by_ip: HashMap<IpAddr, Vec<usize>>,
    pub(super) se_cidrs: Vec<(IpNet, usize)>,
    pub(super) se_by_host: HashMap<String, usize>,
    pub(super) dest_rules: DestinationRuleIndex,
    pub(super) credentials: HashMap<(String, String), Credential>,
    pub(super) authz: AuthzIndex,
}

impl Snapshot {
    /// Builds a snapshot from a load report; any error diagnostic rejects the whole configuration.
    pub fn from_report(
        report: LoadReport,
        settings: MeshSettings,
    ) -> Result<Self, Vec<Diagnostic>> {
        if report.has_errors() {
            return Err(report
                .diagnostics
                .into_iter()
                .filter(|d| d.severity == Severity::Error)
                .collect());
        }
        Ok(Self::build(report.resources, settings, report.diagnostics))
    }

    pub fn build(
        mut resources: Resources,
        settings: MeshSettings,
        mut diagnostics: Vec<Diagnostic>,
    ) -> Self {
        resources.canonicalize();
        let r = &resources;
        let pods = index_pods(r);
        let services = index_services(r, &pods.by_namespace, &settings.cluster_domain);
        let pa_index = PeerAuthnIndex::build(&r.peer_authentications);
        let pod_peer = r
            .pods
            .iter()
            .map(|p| pa_index.compose(&r.peer_authentications, &settings.root_namespace, p))
            .collect();
        let pod_legacy = r
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let svcs: Vec<&Service> =
                    services.of_pod[i].iter().map(|s| &r.services[*s]).collect();
                legacy::rules_for_pod(&r.mesh_policies, &r.policies, &svcs, p)
            })
            .collect();
        let entries = index_service_entries(r);
        let credentials = secret_credentials(r, &mut diagnostics);
        let dest_rules =
            DestinationRuleIndex::build(&r.destination_rules, &settings.cluster_domain);
        let authz = authz_index(r, &settings);
        Self {
            pod_by_key: pods.by_key,
            pod_by_ip: pods.by_ip,
            pods_by_node: pods.by_node,
            pod_in_mesh: pods.in_mesh,
            pod_peer,
            pod_legacy,
            pod_services: services.of_pod,
            svc_by_ip: services.by_ip,
            svc_by_host: services.by_host,
            svc_endpoints: services.endpoints,
            se_by_ip: entries.by_ip,
            se_cidrs: entries.cidrs,
            se_by_host: entries.by_host,
            dest_rules,
            credentials,
            authz,
            settings,
            resources,
            diagnostics,
        }
    }

    pub fn pod(&self, key: &PodKey) -> Option<&Pod> {
        self.pod_by_key.get(key).map(|i| &self.resources.pods[*i])
    }

    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pod_by_ip.get(&ip).map(|i| &self.resources.pods[*i])
    }

    /// Whether the pod is captured: its namespace is enrolled and it did not opt out.
    pub fn in_mesh(&self, key: &PodKey) -> bool {
        self.pod_by_key
            .get(key)
            .is_some_and(|i| self.pod_in_mesh[*i])
    }

    /// Mesh pods scheduled on `node`: what the capture code attaches to.
    pub fn pods_on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Pod> + 'a {
        self.all_pods_on_node(node)
            .filter_map(|(p, mesh)| mesh.then_some(p))
    }

    /// All pods on `node` with their mesh membership.
    pub fn all_pods_on_node<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = (&'a Pod, bool)> + 'a {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .map(|i| (&self.resources.pods[*i], self.pod_in_mesh[*i]))
    }

    /// Services (in the pod's namespace) whose selector picks the pod.
    pub fn services_of(&self, key: &PodKey) -> impl Iterator<Item = &Service> {
        let idx = self
            .pod_by_key
            .get(key)
            .map(|i| self.pod_services[*i].as_slice())
            .unwrap_or_default();
        idx.iter().map(|s| &self.resources.services[*s])
    }

    pub fn service_fqdn(&self, svc: &Service) -> String {
        fqdn(svc, &self.settings.cluster_domain)
    }

    pub(super) fn credential(&self, namespace: &str, name: &str) -> Option<Credential> {
        let key = |n: &str| (namespace.to_owned(), n.to_owned());
        let mut cred = self.credentials.get(&key(name)).cloned()?;
        if cred.ca.is_none() {
            cred.ca = self
                .credentials
                .get(&key(&format!("{name}-cacert")))
                .and_then(|c| c.ca.clone());
        }
        Some(cred)
    }
}

/// Compiles the AuthorizationPolicies and lists, per pod, the ones that apply.
/// Pods by namespace, key, address and node, and whether each is in the mesh.
struct PodIndex<'a> {
    by_namespace: HashMap<&'a str, Vec<usize>>,
    by_key: HashMap<PodKey, usize>,
    by_ip: HashMap<IpAddr, usize>,
    by_node: HashMap<String, Vec<usize>>,
    in_mesh: Vec<bool>,
}

fn index_pods(r: &Resources) -> PodIndex<'_> {
    let namespaces: HashMap<&str, usize> = r
        .namespaces
        .iter()
        .enumerate()
        .map(|(i, n)| (n.metadata.name.as_str(), i))
        .collect();
    let mut index = PodIndex {
        by_namespace: HashMap::new(),
        by_key: HashMap::with_capacity(r.pods.len()),
        by_ip: HashMap::with_capacity(r.pods.len()),
        by_node: HashMap::new(),
        in_mesh: Vec::with_capacity(r.pods.len()),
    };
    for (i, pod) in r.pods.iter().enumerate() {
        index
            .by_namespace
            .entry(pod.namespace())
            .or_default()
            .push(i);
        index
            .by_key
            .insert(PodKey::new(pod.namespace(), pod.name()), i);
        if !pod.spec.host_network {
            for ip in pod.ips() {
                index.by_ip.entry(ip).or_insert(i);
            }
        }
        if let Some(node) = pod.node_name() {
            index.by_node.entry(node.to_owned()).or_default().push(i);
        }
        let namespace_in_mesh = namespaces
            .get(pod.namespace())
            .is_some_and(|n| r.namespaces[*n].mesh_enabled());
        index
            .in_mesh
            .push(namespace_in_mesh && !pod.opted_out() && !pod.spec.host_network);
    }
    index
}

/// Services by cluster IP and host, their endpoint pods, and each pod's services.
struct ServiceIndex {
    by_ip: HashMap<IpAddr, usize>,
    by_host: HashMap<String, usize>,
    endpoints: Vec<Vec<usize>>,
    of_pod: Vec<Vec<usize>>,
}

fn index_services(
    r: &Resources,
    pods_by_namespace: &HashMap<&str, Vec<usize>>,
    cluster_domain: &str,
) -> ServiceIndex {
    let mut index = ServiceIndex {
        by_ip: HashMap::new(),
        by_host: HashMap::with_capacity(r.services.len()),
        endpoints: Vec::with_capacity(r.services.len()),
        of_pod: vec![Vec::new(); r.pods.len()],
    };
    for (s, svc) in r.services.iter().enumerate() {
        for ip in svc.cluster_ips() {
            index.by_ip.entry(ip).or_insert(s);
        }
        index.by_host.insert(fqdn(svc, cluster_domain), s);
        let endpoints: Vec<usize> = pods_by_namespace
            .get(svc.namespace())
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| svc.selects(&r.pods[*p]))
            .collect();
        for p in &endpoints {
            index.of_pod[*p].push(s);
        }
        index.endpoints.push(endpoints);
    }
    index
}

/// ServiceEntries by address, CIDR (longest prefix first) and host.
struct EntryIndex {
    by_ip: HashMap<IpAddr, Vec<usize>>,
    cidrs: Vec<(IpNet, usize)>,
    by_host: HashMap<String, usize>,
}

fn index_service_entries(r: &Resources) -> EntryIndex {
    let mut index = EntryIndex {
        by_ip: HashMap::new(),
        cidrs: Vec::new(),
        by_host: HashMap::new(),
    };
    for (e, se) in r.service_entries.iter().enumerate() {
        let endpoint_ips = se
            .spec
            .endpoints
            .iter()
            .filter_map(|ep| ep.address.as_deref());
        for addr in se
            .spec
            .addresses
            .iter()
            .map(String::as_str)
            .chain(endpoint_ips)
        {
            if let Ok(ip) = addr.parse::<IpAddr>() {
                index.by_ip.entry(ip).or_default().push(e);
            } else if let Ok(net) = addr.parse::<IpNet>() {
                index.cidrs.push((net, e));
            }
        }
        for host in &se.spec.hosts {
            index.by_host.entry(host.clone()).or_insert(e);
        }
    }
    // Longest prefix first, so the most specific CIDR wins.
    index
        .cidrs
        .sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()).then(a.1.cmp(&b.1)));
    index
}

/// `credentialName` material by (namespace, Secret name); a Secret with invalid base64 is a
/// warning and left out.
fn secret_credentials(
    r: &Resources,
    diagnostics: &mut Vec<Diagnostic>,
) -> HashMap<(String, String), Credential> {
    let mut credentials = HashMap::new();
    for secret in &r.secrets {
        let get = |keys: &[&str]| -> Result<Option<Arc<Vec<u8>>>, String> {
            for k in keys {
                if let Some(v) = secret.value(k).map_err(|e| format!("data.{k}: {e}"))? {
                    return Ok(Some(Arc::new(v)));
                }
            }
            Ok(None)
        };
        let credential = (|| {
            Ok::<_, String>(Credential {
                cert: get(&["tls.crt", "cert"])?,
                key: get(&["tls.key", "key"])?,
                ca: get(&["ca.crt", "cacert"])?,
            })
        })();
        let namespace = secret.metadata.namespace();
        match credential {
            Ok(c) => {
                credentials.insert((namespace.to_owned(), secret.metadata.name.clone()), c);
            }
            Err(e) => diagnostics.push(Diagnostic::about(
                Severity::Warning,
                Code::InvalidValue,
                ResourceRef::new("Secret", Some(namespace), &secret.metadata.name),
                format!("invalid base64 in {e}"),
            )),
        }
    }
    credentials
}

fn authz_index(r: &Resources, settings: &MeshSettings) -> AuthzIndex {
    let domains = std::iter::once(&settings.trust_domain)
        .chain(&settings.trust_domain_aliases)
        .map(String::as_str)
        .collect();
    let bundle = TrustBundle { domains };
    AuthzIndex::build(
        &r.authorization_policies,
        &r.pods,
        &settings.root_namespace,
        &bundle,
    )
}

fn fqdn(svc: &Service, domain: &str) -> String {
    format!("{}.{}.svc.{domain}", svc.name(), svc.namespace())
}

impl Snapshot {
    /// The authorization decision of the proxy in front of `pod` for one inbound connection.
    /// Only lookups and the pod's own precomputed policy list: no scan of all policies. An unknown
    /// pod is denied (its policies cannot be known).
    pub fn authorize(&self, pod: &PodKey, req: &AuthzRequest<'_>) -> AuthzDecision {
        match self.pod_by_key.get(pod) {
            Some(i) => self.authz.decide(*i, req),
            None => AuthzDecision {
                action: AuthzAction::Deny,
                policy: None,
                rule: None,
                reason: format!("denied: unknown destination pod {pod}"),
                dry_run: None,
                audited: None,
            },
        }
    }
}
