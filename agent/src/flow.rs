//! What one proxied connection is: who connects to whom, how it crosses the wire, what it moved.
//! A leaf module: the proxy fills these in, and metrics, the access log, the live connection
//! table and the admin API read them, without importing each other.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Which side of the pod the connection is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Initiated by an enrolled pod (the proxy reports as `source`).
    Outbound,
    /// Addressed to an enrolled pod (the proxy reports as `destination`).
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// What actually crossed the network between the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireMode {
    /// sockmesh mTLS between the two proxies.
    MutualTls,
    /// Plain TCP (peer not in the mesh, or a permissive workload receiving plaintext).
    Plaintext,
    /// The application's own TLS, forwarded untouched.
    PassthroughTls,
    /// TLS the proxy originated for a DestinationRule SIMPLE or MUTUAL (not mesh identity).
    OriginatedTls,
}

impl WireMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MutualTls => "mutual_tls",
            Self::Plaintext => "plaintext",
            Self::PassthroughTls => "passthrough_tls",
            Self::OriginatedTls => "originated_tls",
        }
    }
}

/// A workload as the metrics and logs name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRef {
    pub namespace: String,
    /// Istio's workload name (the owning Deployment etc.; the pod name when none is known).
    pub name: String,
    pub pod: String,
}

/// The connecting side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub addr: SocketAddr,
    /// Set when the source is a known (enrolled or mesh) pod.
    pub workload: Option<WorkloadRef>,
    /// SPIFFE id: the local pod's for outbound, the peer certificate's for inbound mTLS.
    pub principal: Option<String>,
}

/// The side connected to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The address the application connected to (before any service resolution); unknown when
    /// the capture state had no entry for the socket.
    pub original: Option<SocketAddr>,
    /// The endpoint the proxy actually connected to, when known.
    pub endpoint: Option<SocketAddr>,
    /// Service hostname (`name.namespace.svc.cluster.local`) when the original dst is a service.
    pub service: Option<String>,
    pub workload: Option<WorkloadRef>,
    /// Expected (outbound) or local (inbound) SPIFFE id.
    pub principal: Option<String>,
}

/// Everything known about a connection when it is opened or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub direction: Direction,
    pub mode: WireMode,
    pub source: Source,
    pub destination: Destination,
}

/// Bytes moved on a connection, with Envoy's and Istio's meaning: `received` came from the
/// source (request direction), `sent` went back to the source (response direction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteCount {
    pub received: u64,
    pub sent: u64,
}

#[cfg(test)]
pub(crate) mod fixtures;
