//! Kubernetes integration: where the kubelet puts each pod's cgroups, a watch that reports new
//! ones as they are created, and the API source.
pub mod api_source;
pub mod api_state;
pub mod cgroup_layout;
pub mod cgroup_watch;
pub mod discovery;
pub mod enrollment;
