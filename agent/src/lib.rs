//! sockmesh agent library: capture (eBPF), proxy, policy, identity and the CLI's building blocks.
pub mod bpffs;
pub mod capture;
pub mod cgroup;
pub mod kube;
pub mod logging;
pub mod netns;
pub mod proxy;
pub mod run;
pub mod uninstall;
pub mod workload;
