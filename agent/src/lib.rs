//! sockmesh agent library: capture (eBPF), proxy, policy, identity and the CLI's building blocks.
pub mod bpffs;
pub mod capture;
pub mod cgroup;
pub mod identity;
pub mod kube;
pub mod logging;
pub mod netns;
pub mod policy;
pub mod proxy;
pub mod run;
pub mod tls;
pub mod uninstall;
pub mod workload;
