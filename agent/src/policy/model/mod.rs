//! The in-memory resource model: Kubernetes and Istio kinds as `kubectl get -o yaml` prints them.
//!
//! Only the fields that TLS and authorization decisions read are modelled; the loader knows which
//! other fields are legitimate (and stays quiet about them) and warns about the rest.

pub mod authorization;
pub mod core;
pub mod meta;
pub mod networking;
pub mod security;

pub use self::authorization::{AuthorizationPolicy, AuthzPolicyAction};
pub use self::core::{IntOrString, Namespace, Pod, Secret, Service, ServicePort};
pub use self::meta::{ObjectMeta, PodKey, ResourceRef, WorkloadSelector};
pub use self::networking::{
    ClientTlsSettings, DestinationRule, Location, Resolution, ServiceEntry, TlsMode, TrafficPolicy,
};
pub use self::security::{InboundMode, MeshPolicy, PeerAuthentication, PeerMode, Policy};

/// Everything one configuration source produced: the single model every source fills and the
/// resolver reads, so a Kubernetes API source can replace the file source without touching either.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub secrets: Vec<Secret>,
    pub service_entries: Vec<ServiceEntry>,
    pub peer_authentications: Vec<PeerAuthentication>,
    pub destination_rules: Vec<DestinationRule>,
    pub mesh_policies: Vec<MeshPolicy>,
    pub policies: Vec<Policy>,
    pub authorization_policies: Vec<AuthorizationPolicy>,
}

impl Resources {
    /// Puts every list in a canonical order so that decisions never depend on file order.
    pub fn canonicalize(&mut self) {
        fn by_key<T>(v: &mut [T], meta: impl Fn(&T) -> &ObjectMeta) {
            v.sort_by(|a, b| {
                let (a, b) = (meta(a), meta(b));
                (a.namespace(), &a.name).cmp(&(b.namespace(), &b.name))
            });
        }
        by_key(&mut self.namespaces, |x| &x.metadata);
        by_key(&mut self.pods, |x| &x.metadata);
        by_key(&mut self.services, |x| &x.metadata);
        by_key(&mut self.secrets, |x| &x.metadata);
        by_key(&mut self.service_entries, |x| &x.metadata);
        by_key(&mut self.peer_authentications, |x| &x.metadata);
        by_key(&mut self.destination_rules, |x| &x.metadata);
        by_key(&mut self.mesh_policies, |x| &x.metadata);
        by_key(&mut self.policies, |x| &x.metadata);
        by_key(&mut self.authorization_policies, |x| &x.metadata);
    }
}
