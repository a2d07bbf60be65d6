//! The shared node proxy: per-pod listeners inside each pod's network namespace, outbound and
//! inbound connection handling, and byte forwarding.
mod client_tls;
mod forward;
mod inbound;
pub mod listeners;
mod outbound;
mod route;
mod upstream;

use std::{sync::Arc, time::Duration};

use crate::{
    capture::Capture,
    connections::{Telemetry, WorkloadRef},
    identity::CertManager,
    policy::ConfigHandle,
    tls::origination::OriginationConfigs,
    workload::{EnrolledPod, WorkloadByCgroup},
};

pub use inbound::serve as serve_inbound;
pub use outbound::serve as serve_outbound;

/// Everything a connection handler consults; shared by all pods' accept loops.
pub struct Proxy {
    pub capture: Arc<Capture>,
    pub workloads: Arc<WorkloadByCgroup>,
    pub config: ConfigHandle,
    pub certs: Arc<CertManager>,
    pub origination: OriginationConfigs,
    pub telemetry: Arc<Telemetry>,
    pub timeouts: Timeouts,
    pub trust_domain: String,
    balancer: route::Balancer,
}

/// Time limits of one connection's set-up phases.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    /// How long inbound waits for the first bytes to classify a connection.
    pub detect: Duration,
}

impl Proxy {
    pub fn new(
        capture: Arc<Capture>,
        config: ConfigHandle,
        certs: Arc<CertManager>,
        telemetry: Arc<Telemetry>,
        timeouts: Timeouts,
        trust_domain: String,
    ) -> Self {
        Self {
            capture,
            workloads: Arc::default(),
            config,
            certs,
            origination: OriginationConfigs::new(),
            telemetry,
            timeouts,
            trust_domain,
            balancer: route::Balancer::default(),
        }
    }
}

/// How metrics and logs name an enrolled pod.
fn workload_ref(pod: &EnrolledPod) -> WorkloadRef {
    WorkloadRef {
        namespace: pod.spec.namespace.clone(),
        name: pod.spec.name.clone(),
        pod: pod.spec.name.clone(),
    }
}
