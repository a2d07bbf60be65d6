//! Workloads: which pods this node enrolls, and the registry the proxy consults per connection.
pub mod config_pods;
mod enroll;
mod registry;
mod spec;

pub use enroll::Enroller;
pub use registry::{EnrolledPod, WorkloadByCgroup};
pub use spec::PodSpec;
