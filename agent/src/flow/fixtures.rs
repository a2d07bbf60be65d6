//! Connection descriptions shared by the tests of the modules that read them.
use std::net::SocketAddr;

use super::*;

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn workload(namespace: &str, name: &str, pod: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: namespace.into(),
        name: name.into(),
        pod: pod.into(),
    }
}

/// An mTLS outbound connection from default/client to the server service (shared fixture).
pub(crate) fn outbound_info() -> ConnectionInfo {
    ConnectionInfo {
        direction: Direction::Outbound,
        mode: WireMode::MutualTls,
        source: Source {
            addr: addr("10.0.0.1:40000"),
            workload: Some(workload("default", "client", "client-7d9f")),
            principal: Some("spiffe://cluster.local/ns/default/sa/client".into()),
        },
        destination: Destination {
            original: Some(addr("10.96.0.10:80")),
            endpoint: Some(addr("10.0.1.2:8080")),
            service: Some("server.default.svc.cluster.local".into()),
            workload: Some(workload("default", "server", "server-5c4b")),
            principal: Some("spiffe://cluster.local/ns/default/sa/server".into()),
        },
    }
}
