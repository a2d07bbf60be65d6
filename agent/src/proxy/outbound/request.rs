//! An outbound connection as a value, one type per stage: [`Accepted`] (the app socket on a
//! pod's listener), [`Captured`] (its original destination, its workload verified by cgroup),
//! [`OutboundRequest`] (where it goes and how). Each says what telemetry knows of it so far.
use std::{net::SocketAddr, sync::Arc};

use super::route::Route;
use crate::{
    flow::{ConnectionInfo, Destination, Direction, Source, WireMode, WorkloadRef},
    identity::SpiffeId,
    workload::EnrolledPod,
};

/// An app connection accepted on `source`'s outbound listener.
pub struct Accepted {
    pub source: Arc<EnrolledPod>,
    pub client: SocketAddr,
}

/// The connection's original destination, recovered from the capture maps.
pub struct Captured {
    pub source: Arc<EnrolledPod>,
    pub client: SocketAddr,
    pub original: SocketAddr,
}

/// Everything the secure and forward stages need: the source workload and identity, the original
/// destination, and the route (endpoint, client TLS mode, expected identities).
pub struct OutboundRequest {
    pub source: Arc<EnrolledPod>,
    pub client: SocketAddr,
    pub original: SocketAddr,
    pub route: Route,
}

impl Accepted {
    pub fn info(&self) -> ConnectionInfo {
        base_info(&self.source, self.client, None)
    }
}

impl Captured {
    pub fn info(&self) -> ConnectionInfo {
        base_info(&self.source, self.client, Some(self.original))
    }
}

/// What is known before a route: the source workload and its identity, and the original
/// destination once captured.
fn base_info(
    source: &EnrolledPod,
    client: SocketAddr,
    original: Option<SocketAddr>,
) -> ConnectionInfo {
    ConnectionInfo {
        direction: Direction::Outbound,
        mode: WireMode::Plaintext,
        source: Source {
            addr: client,
            workload: Some(source.workload_ref()),
            principal: Some(source.identity.id().to_string()),
        },
        destination: Destination {
            original,
            endpoint: None,
            service: None,
            workload: None,
            principal: None,
        },
    }
}

impl OutboundRequest {
    /// The connection before the upstream is secured: the expected server identity.
    pub fn info(&self) -> ConnectionInfo {
        let route = &self.route;
        let mut info = base_info(&self.source, self.client, Some(self.original));
        info.destination.endpoint = Some(route.endpoint);
        info.destination.service = route.service.clone();
        info.destination.workload =
            route
                .endpoint_pod
                .as_ref()
                .map(|(namespace, name)| WorkloadRef {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    pod: name.clone(),
                });
        info.destination.principal = route.expected.first().map(ToString::to_string);
        info
    }

    /// The connection as forwarded: what crossed the wire and, for mesh mTLS, the server's
    /// verified identity.
    pub fn forwarded(&self, mode: WireMode, peer: Option<&SpiffeId>) -> ConnectionInfo {
        let mut info = self.info();
        info.mode = mode;
        if let Some(peer) = peer {
            info.destination.principal = Some(peer.to_string());
        }
        info
    }
}
