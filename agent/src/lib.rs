//! sockmesh agent library: capture (eBPF), proxy, policy, identity and the CLI's building blocks.
pub mod accesslog;
pub mod admin;
pub mod bpffs;
pub mod capture;
pub mod cgroup;
pub mod cli;
pub mod connections;
pub mod logging;
pub mod metrics;
pub mod netns;
pub mod proxy;
pub mod run;
pub mod uninstall;
pub mod workload;
