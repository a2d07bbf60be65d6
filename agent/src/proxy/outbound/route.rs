//! Choosing the upstream of an outbound connection from the resolver's answer: the proxy balances
//! a Service's endpoints itself, so it knows which endpoint (and which identity) it talks to.
use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use crate::{
    identity::SpiffeId,
    policy::{ClientTls, Destination, Endpoint, Outbound, Snapshot, TlsMode},
};

/// Round-robin across endpoints; one counter for all services is enough to spread load.
#[derive(Default)]
pub struct Balancer {
    next: AtomicUsize,
}

/// Where one outbound connection goes and how.
#[derive(Debug)]
pub struct Route {
    pub endpoint: SocketAddr,
    pub endpoint_pod: Option<(String, String)>,
    pub service: Option<String>,
    pub client: ClientTls,
    /// Identities the server may present (ISTIO_MUTUAL): the rule's SANs or the endpoint's SPIFFE
    /// identity. Empty means nothing acceptable: the handshake is refused.
    pub expected: Vec<SpiffeId>,
}

impl Balancer {
    /// Picks an endpoint that has an address; `None` when the destination has none (a Service
    /// without ready endpoints).
    pub fn route(
        &self,
        outbound: Outbound,
        original: SocketAddr,
        snapshot: &Snapshot,
    ) -> Option<Route> {
        let service = match &outbound.destination {
            Destination::Service { fqdn, .. } => Some(fqdn.clone()),
            _ => None,
        };
        let mut usable: Vec<Endpoint> = outbound
            .endpoints
            .into_iter()
            .filter(|e| e.addr.is_some())
            .collect();
        if usable.is_empty() {
            return None;
        }
        let pick = if usable.len() == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % usable.len()
        };
        let endpoint = usable.swap_remove(pick);
        let expected = expected_identities(&endpoint);
        let addr = same_family(&endpoint, original, snapshot);
        Some(Route {
            endpoint: addr,
            endpoint_pod: endpoint.pod.map(|p| (p.namespace, p.name)),
            service,
            expected,
            client: endpoint.client,
        })
    }
}

/// The endpoint address in the family the application dialled: a pod dialled by one of its
/// addresses is reached at that address; a Service dialled over IPv6 reaches its pods over IPv6
/// when they have an IPv6 address.
fn same_family(endpoint: &Endpoint, original: SocketAddr, snapshot: &Snapshot) -> SocketAddr {
    let addr = endpoint.addr.expect("filtered on addr");
    if addr.is_ipv4() == original.is_ipv4() {
        return addr;
    }
    let Some(pod) = endpoint.pod.as_ref().and_then(|key| snapshot.pod(key)) else {
        return addr;
    };
    pod.ips()
        .into_iter()
        .find(|ip| ip.is_ipv4() == original.is_ipv4())
        .map_or(addr, |ip| SocketAddr::new(ip, addr.port()))
}

fn expected_identities(endpoint: &Endpoint) -> Vec<SpiffeId> {
    if endpoint.client.mode != TlsMode::IstioMutual {
        return Vec::new();
    }
    let sans = &endpoint.client.subject_alt_names;
    if sans.is_empty() {
        endpoint
            .identity
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect()
    } else {
        sans.iter().filter_map(|id| id.parse().ok()).collect()
    }
}
