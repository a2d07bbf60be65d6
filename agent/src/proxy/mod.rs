//! The shared node proxy: per-pod listeners inside each pod's network namespace, outbound and
//! inbound connection handling, and byte forwarding.
mod forward;
mod inbound;
pub mod listeners;
mod outbound;
mod upstream;

use std::{sync::Arc, time::Duration};

use crate::{capture::Capture, workload::WorkloadByCgroup};

pub use inbound::serve as serve_inbound;
pub use outbound::serve as serve_outbound;

/// Everything a connection handler consults; shared by all pods' accept loops.
pub struct Proxy {
    pub capture: Arc<Capture>,
    pub workloads: Arc<WorkloadByCgroup>,
    pub connect_timeout: Duration,
}
