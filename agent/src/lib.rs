//! sockmesh agent library: capture (eBPF), proxy, policy, identity and the CLI's building blocks.
pub mod capture;
pub mod cgroup;
pub mod netns;
pub mod proxy;
pub mod workload;
pub mod logging;
pub mod run;
pub mod uninstall;
