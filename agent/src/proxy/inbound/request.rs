//! An inbound connection (or tunnel stream) as a value: who connects, to which port of which
//! enrolled pod, under which PeerAuthentication mode, how it arrived and with which verified
//! identity. Admission decides on exactly this.
use std::{net::SocketAddr, sync::Arc};

use crate::{
    flow::{ConnectionInfo, Destination, Direction, Source, WireMode, WorkloadRef},
    identity::SpiffeId,
    policy::InboundMode,
    workload::EnrolledPod,
};

/// How a connection reached the pod's proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Not inspected: the port's mode is DISABLE, bytes go to the app as they are.
    Uninspected,
    /// Plain TCP bytes.
    Plaintext,
    /// TLS that is not mesh mTLS (the app's own TLS).
    OtherTls,
    /// The client sent nothing within the detection timeout.
    Silent,
    /// A dedicated mesh mTLS connection, terminated by the proxy.
    MeshTls,
    /// A stream on a tunnel (mesh mTLS between two proxies), terminated by the proxy.
    TunnelStream,
}

impl Arrival {
    /// Mesh mTLS terminated by this proxy: the peer identity is verified.
    pub fn is_mesh(self) -> bool {
        matches!(self, Self::MeshTls | Self::TunnelStream)
    }

    fn wire_mode(self) -> WireMode {
        match self {
            Self::MeshTls | Self::TunnelStream => WireMode::MutualTls,
            Self::OtherTls => WireMode::PassthroughTls,
            Self::Uninspected | Self::Plaintext | Self::Silent => WireMode::Plaintext,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Uninspected => "an uninspected connection",
            Self::Plaintext => "plaintext",
            Self::OtherTls => "TLS without the mesh ALPN",
            Self::Silent => "a connection that sent nothing",
            Self::MeshTls => "mesh mTLS",
            Self::TunnelStream => "a mesh tunnel stream",
        }
    }
}

/// One inbound connection or tunnel stream for an enrolled pod.
#[derive(Clone)]
pub struct InboundRequest {
    /// The destination workload.
    pub pod: Arc<EnrolledPod>,
    /// The connecting address.
    pub client: SocketAddr,
    /// The connecting pod, when the configuration knows its address.
    pub source_workload: Option<WorkloadRef>,
    /// The pod address and port the client connected to (the original destination).
    pub destination: SocketAddr,
    /// The PeerAuthentication mode of the target port; STRICT for a pod the configuration no
    /// longer knows (fail closed).
    pub mode: InboundMode,
    pub arrival: Arrival,
    /// The client's SPIFFE id from its verified certificate (mesh arrivals only).
    pub principal: Option<SpiffeId>,
    /// The server name the client's TLS ClientHello asked for, if it sent one.
    pub sni: Option<String>,
}

impl InboundRequest {
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            direction: Direction::Inbound,
            mode: self.arrival.wire_mode(),
            source: Source {
                addr: self.client,
                workload: self.source_workload.clone(),
                principal: self.principal.as_ref().map(ToString::to_string),
            },
            destination: Destination {
                original: Some(self.destination),
                endpoint: Some(self.destination),
                service: None,
                workload: Some(self.pod.workload_ref()),
                principal: Some(self.pod.identity.id().to_string()),
            },
        }
    }
}
