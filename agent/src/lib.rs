//! sockmesh agent library: capture (eBPF), proxy, policy, identity and the CLI's building blocks.
pub mod policy;
