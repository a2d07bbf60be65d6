//! The shared node proxy. Each enrolled pod's listeners are served here; one connection goes
//! top-down through the tree as a value, stage by stage:
//!
//! - `accept`: a pod's listener hands over a socket; the handler's refusal, if any, is recorded
//!   once (`refusal::record`).
//! - `outbound/`: capture (original destination, source workload) → resolve (policy, endpoint,
//!   expected identities) → secure (client TLS mode, or a stream on a `tunnel`) → forward.
//! - `inbound/`: accept → classify (peek) → terminate mesh mTLS → **admit** (the one admission
//!   function every arrival path calls) → forward to the app.
//! - `tunnel/`: streams of many app connections over one mesh connection between two proxies.
//! - `io/`: sockets in pod namespaces, byte forwarding, buffers.
mod accept;
mod inbound;
mod io;
mod limits;
mod outbound;
mod refusal;
/// Public so the `tunnel_frame` fuzz target can read frames from untrusted bytes.
pub mod tunnel;

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;

use crate::{
    capture::Capture,
    flow::Direction,
    policy::ConfigHandle,
    telemetry::Telemetry,
    workload::{EnrolledPod, PodListeners, ServePod, WorkloadByCgroup},
};

/// What every connection handler consults; shared by all pods' accept loops.
pub struct Proxy {
    capture: Arc<Capture>,
    workloads: Arc<WorkloadByCgroup>,
    config: ConfigHandle,
    /// Client TLS configs of DestinationRule SIMPLE/MUTUAL origination.
    credentials: outbound::Credentials,
    telemetry: Arc<Telemetry>,
    timeouts: Timeouts,
    balancer: outbound::Balancer,
    /// Admitted inbound connections, decided again when the policies change.
    open_inbound: inbound::OpenInbound,
    /// Idle tunnels (pooled mesh connections) of the client side.
    tunnels: tunnel::Tunnels,
    /// Set when the agent drains: idle tunnels close instead of waiting for streams.
    draining: tokio::sync::watch::Sender<bool>,
    /// Connections accepted and not yet finished, whatever their phase (what a drain waits for),
    /// against the connection limits.
    usage: limits::Usage,
}

pub use limits::Limits;

/// Time limits of one connection's set-up phases.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub handshake: Duration,
    /// How long inbound waits for the first bytes to classify a connection.
    pub detect: Duration,
    /// A forwarded connection that moves no byte for this long is closed.
    pub idle: Duration,
}

impl Proxy {
    pub fn new(
        capture: Arc<Capture>,
        workloads: Arc<WorkloadByCgroup>,
        config: ConfigHandle,
        telemetry: Arc<Telemetry>,
        timeouts: Timeouts,
        limits: Limits,
    ) -> Self {
        Self {
            capture,
            workloads,
            config,
            credentials: outbound::Credentials::default(),
            telemetry,
            timeouts,
            balancer: outbound::Balancer::default(),
            open_inbound: inbound::OpenInbound::default(),
            tunnels: tunnel::Tunnels::default(),
            draining: tokio::sync::watch::Sender::new(false),
            usage: limits::Usage::new(limits),
        }
    }

    /// Connections accepted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.usage.in_flight()
    }

    /// Closes every idle tunnel and makes servers of tunnels close theirs as soon as their current
    /// stream ends, so a drain is not held up by idle connections.
    pub fn start_drain(&self) {
        self.draining.send_replace(true);
        self.tunnels.clear();
    }

    fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Closes tunnels that stayed idle too long, until the agent stops.
    pub async fn reap_idle_connections(&self) {
        let mut tick = tokio::time::interval(tunnel::IDLE_TIMEOUT / 4);
        loop {
            tick.tick().await;
            self.tunnels.reap();
        }
    }

    /// Decides the open inbound connections again whenever the configuration changes, until the
    /// agent stops: a connection a new AuthorizationPolicy denies is closed.
    pub async fn revoke_on_policy_change(&self) {
        let mut changes = self.config.subscribe();
        while changes.changed().await.is_ok() {
            let snapshot = self.config.current();
            let revoked = self
                .open_inbound
                .recheck(&snapshot, &self.telemetry.metrics);
            if revoked > 0 {
                tracing::info!(revoked, "policy change closed open connections");
            }
        }
    }

    /// Counts one accepted connection until the returned guard drops; refused at the limit.
    fn track(self: &Arc<Self>) -> Result<InFlight, refusal::Refusal> {
        self.usage.accept()?;
        Ok(InFlight(self.clone()))
    }
}

impl ServePod for Proxy {
    fn serve(
        self: Arc<Self>,
        pod: &Arc<EnrolledPod>,
        listeners: PodListeners,
    ) -> Vec<JoinHandle<()>> {
        let PodListeners {
            outbound_v4,
            outbound_v6,
            inbound_v4,
            inbound_v6,
            ..
        } = listeners;
        let outbound = std::iter::once(outbound_v4)
            .chain(outbound_v6)
            .map(|l| (l, Direction::Outbound));
        let inbound = std::iter::once(inbound_v4)
            .chain(inbound_v6)
            .map(|l| (l, Direction::Inbound));
        outbound
            .chain(inbound)
            .map(|(listener, direction)| {
                tokio::spawn(accept::accept_loop(
                    listener,
                    direction,
                    pod.clone(),
                    self.clone(),
                ))
            })
            .collect()
    }
}

/// One accepted connection, counted in [`Proxy::in_flight`] while it lives.
struct InFlight(Arc<Proxy>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.usage.release();
    }
}
