//! Kubernetes integration (`--kubernetes`).
//!
//! - [`api_source::start`] watches the API (every node's Pods, cut down by [`pod_projection`],
//!   Namespaces, Services, the Istio kinds the cluster serves, rediscovered periodically, and
//!   credential Secrets) into an [`api_state::ApiState`] with a `synced` flag.
//! - [`discovery::Layout`] finds a pod's container cgroups and netns from its UID and QoS class;
//!   [`cgroup_watch::watch`] reports new pod and container cgroups as soon as they are created.
//! - [`node_pods::watch_node_pods`] combines both into the `PodSpec`s the enroller reconciles.
//! - [`mesh_config`] reads meshConfig from the `istio` ConfigMap; [`owner`] watches the agent's
//!   own DaemonSet and namespace, so an uninstall removes capture instead of black-holing pods.
//!
//! Tested against the test bed's API server (`testbed::ApiServer`, `agent/tests/kube_api_source.rs`),
//! since no real apiserver can run on the development machines.
pub mod api_source;
pub mod api_state;
pub mod cgroup_layout;
pub mod cgroup_watch;
pub mod discovery;
pub mod enrollment;
pub mod mesh_config;
mod named_object;
pub mod node_pods;
pub mod owner;
pub mod pod_projection;
pub mod policy_feed;
