//! Workloads: which pods this node enrolls, and the registry the proxy consults per connection.
pub mod config_pods;
mod enroll;
mod listeners;
mod registry;
mod spec;

use std::sync::Arc;

use tokio::task::JoinHandle;

pub use enroll::{Enroller, EnrollerParts};
pub use listeners::PodListeners;
pub use registry::{EnrolledPod, WorkloadByCgroup};
pub use spec::PodSpec;

/// What serves an enrolled pod's listeners: the proxy. Enrollment hands the listeners over and
/// aborts the returned tasks when the pod leaves; it never reaches into the proxy otherwise.
pub trait ServePod: Send + Sync {
    fn serve(
        self: Arc<Self>,
        pod: &Arc<EnrolledPod>,
        listeners: PodListeners,
    ) -> Vec<JoinHandle<()>>;
}
