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
        ConnectionInfo {
            direction: Direction::Outbound,
            mode: WireMode::Plaintext,
            source: Source {
                addr: self.client,
                workload: Some(self.source.workload_ref()),
                principal: Some(self.source.identity.id().to_string()),
            },
            destination: Destination {
                original: None,
                endpoint: None,
                service: None,
                workload: None,
                principal: None,
            },
        }
    }
}

impl Captured {
    pub fn info(&self) -> ConnectionInfo {
        let mut info = Accepted {
            source: self.source.clone(),
            client: self.client,
        }
        .info();
        info.destination.original = Some(self.original);
        info
    }
}

impl OutboundRequest {
    /// The connection before the upstream is secured: the expected server identity.
    pub fn info(&self) -> ConnectionInfo {
        let route = &self.route;
        let mut info = Captured {
            source: self.source.clone(),
            client: self.client,
            original: self.original,
        }
        .info();
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
