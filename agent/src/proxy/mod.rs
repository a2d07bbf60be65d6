//! The shared node proxy: per-pod listeners inside each pod's network namespace, outbound and
//! inbound connection handling, and byte forwarding.
mod accept;
mod buffered;
mod buffers;
mod client_tls;
mod forward;
mod inbound;
pub mod listeners;
mod outbound;
mod pooled;
mod route;
mod splice;
mod upstream;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{
    capture::Capture,
    identity::CertManager,
    policy::ConfigHandle,
    tls::origination::OriginationConfigs,
    workload::{EnrolledPod, WorkloadByCgroup},
    {flow::WorkloadRef, telemetry::Telemetry},
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
    /// Idle pooled mesh connections of the client side.
    pool: pooled::Pool<pooled::outbound::Pooled>,
    /// Set when the agent drains: idle pooled connections close instead of waiting for streams.
    draining: tokio::sync::watch::Sender<bool>,
    /// Connections accepted and not yet finished, whatever their phase: what a drain waits for.
    in_flight: AtomicUsize,
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
            pool: pooled::Pool::default(),
            draining: tokio::sync::watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Connections accepted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Closes every idle pooled connection and makes servers of pooled connections close theirs
    /// as soon as their current stream ends, so a drain is not held up by idle connections.
    pub fn start_drain(&self) {
        self.draining.send_replace(true);
        self.pool.clear();
    }

    fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Closes pooled connections that stayed idle too long, until the agent stops.
    pub async fn reap_idle_connections(&self) {
        let mut tick = tokio::time::interval(pooled::IDLE_TIMEOUT / 4);
        loop {
            tick.tick().await;
            self.pool.reap();
        }
    }

    /// Counts one accepted connection until the returned guard drops.
    fn track(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One accepted connection, counted in [`Proxy::in_flight`] while it lives.
struct InFlight(Arc<Proxy>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
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
